ARG ARCH="amd64"
ARG OS="linux"
FROM quay.io/prometheus/busybox-${OS}-${ARCH}:latest
LABEL maintainer="The llama_exporter developers"

ARG ARCH="amd64"
ARG OS="linux"
COPY .build/${OS}-${ARCH}/llama_exporter /bin/llama_exporter
COPY example.yml /etc/llama_exporter/config.yml

# 5200: HTTP (/probe, /metrics); 862/udp: the STAMP reflector (RFC 8762).
# Binding 862 needs root or CAP_NET_BIND_SERVICE; the image runs as root so
# that it works with --cap-add NET_BIND_SERVICE or host networking.
EXPOSE 5200 862/udp
ENTRYPOINT ["/bin/llama_exporter"]
CMD ["--config.file=/etc/llama_exporter/config.yml"]
