package deploy

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"go.yaml.in/yaml/v3"
)

// k8sObject is the part of a Kubernetes object the tests read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	HostNetwork bool `yaml:"hostNetwork"`
	Containers  []struct {
		Name            string   `yaml:"name"`
		Args            []string `yaml:"args"`
		ReadinessProbe  *probe   `yaml:"readinessProbe"`
		LivenessProbe   *probe   `yaml:"livenessProbe"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct {
				Add  []string `yaml:"add"`
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	} `yaml:"containers"`
	Volumes []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

func loadManifest(t *testing.T, rel string) []k8sObject {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", rel, err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
	return objs
}

func find(objs []k8sObject, kind, name string) *k8sObject {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

// TestKubernetesDaemonSet checks the properties the deployment relies on:
// host network, NET_BIND_SERVICE and nothing else, health and readiness
// probes on /-/healthy and /-/ready, and the config from the ConfigMap.
func TestKubernetesDaemonSet(t *testing.T) {
	objs := loadManifest(t, "deploy/kubernetes/daemonset.yml")
	ds := find(objs, "DaemonSet", "llama-exporter")
	cm := find(objs, "ConfigMap", "llama-exporter")
	if ds == nil || cm == nil {
		t.Fatalf("daemonset.yml lacks the llama-exporter DaemonSet or ConfigMap")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is not true")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	caps := c.SecurityContext.Capabilities
	if !slices.Equal(caps.Drop, []string{"ALL"}) || !slices.Equal(caps.Add, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] add [NET_BIND_SERVICE]", caps.Drop, caps.Add)
	}
	if ape := c.SecurityContext.AllowPrivilegeEscalation; ape == nil || *ape {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/-/ready" {
		t.Errorf("readiness probe %+v, want httpGet /-/ready", c.ReadinessProbe)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		t.Errorf("liveness probe %+v, want httpGet /-/healthy", c.LivenessProbe)
	}
	var configArg string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configArg = v
		}
	}
	if configArg == "" {
		t.Fatal("no --config.file argument")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name {
				if _, ok := cm.Data[strings.TrimPrefix(configArg, m.MountPath+"/")]; ok && strings.HasPrefix(configArg, m.MountPath+"/") {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("--config.file=%s is not a key of the ConfigMap %s mounted in the container", configArg, cm.Metadata.Name)
	}
}

// TestKubernetesAgentConfigEmbedded checks that the ConfigMap of
// prometheus-agent.yml carries prometheus.yml verbatim, so that the file
// promtool checks is the one deployed.
func TestKubernetesAgentConfigEmbedded(t *testing.T) {
	objs := loadManifest(t, "deploy/kubernetes/prometheus-agent.yml")
	cm := find(objs, "ConfigMap", "prometheus-agent")
	ds := find(objs, "DaemonSet", "prometheus-agent")
	if cm == nil || ds == nil {
		t.Fatal("prometheus-agent.yml lacks the prometheus-agent ConfigMap or DaemonSet")
	}
	want, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "kubernetes", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["prometheus.yml"] != string(want) {
		t.Error("the ConfigMap's prometheus.yml differs from deploy/kubernetes/prometheus.yml; copy the file into the ConfigMap")
	}
	if !ds.Spec.Template.Spec.HostNetwork {
		t.Error("the agent must use the host network to reach its node's exporter on 127.0.0.1:5200")
	}
}

// TestExporterConfigsCheck runs llama_exporter --config.check on every
// exporter configuration under deploy/ (the ConfigMap's config.yml).
func TestExporterConfigsCheck(t *testing.T) {
	root := repoRoot(t)
	objs := loadManifest(t, "deploy/kubernetes/daemonset.yml")
	cm := find(objs, "ConfigMap", "llama-exporter")
	if cm == nil || cm.Data["config.yml"] == "" {
		t.Fatal("no config.yml in the llama-exporter ConfigMap")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		testlab.SkipOrFail(t, "the go command is not on PATH: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "llama_exporter")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(cm.Data["config.yml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--config.file="+cfg, "--config.check").CombinedOutput(); err != nil {
		t.Fatalf("llama_exporter --config.check on the ConfigMap's config.yml: %v\n%s", err, out)
	}
}
