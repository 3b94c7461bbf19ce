package window

import "slices"

// rttBlock is the capacity of one block of an rttSet: inserts and deletes
// move at most this many values.
const rttBlock = 128

// rttSet is a sorted multiset of RTTs (ns) answering rank queries, for the
// window's exact quantiles. Values live in sorted blocks of at most
// rttBlock, so an insert or a delete costs O(log n + rttBlock) whatever the
// window's length, a rank query O(n / rttBlock), and in steady state
// nothing is allocated: emptied blocks are kept for reuse.
type rttSet struct {
	blocks [][]int64
	free   [][]int64
	n      int
}

// find returns the index of the first block whose largest value is >= v,
// or the last block.
func (s *rttSet) find(v int64) int {
	i, _ := slices.BinarySearchFunc(s.blocks, v, func(b []int64, v int64) int {
		switch last := b[len(b)-1]; {
		case last < v:
			return -1
		case last > v:
			return 1
		}
		return 0
	})
	return min(i, len(s.blocks)-1)
}

func (s *rttSet) newBlock() []int64 {
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free = s.free[:n-1]
		return b[:0]
	}
	return make([]int64, 0, rttBlock)
}

func (s *rttSet) insert(v int64) {
	s.n++
	if len(s.blocks) == 0 {
		s.blocks = append(s.blocks, append(s.newBlock(), v))
		return
	}
	i := s.find(v)
	b := s.blocks[i]
	if len(b) == rttBlock { // split in halves first
		nb := append(s.newBlock(), b[rttBlock/2:]...)
		b = b[:rttBlock/2]
		s.blocks[i] = b
		s.blocks = slices.Insert(s.blocks, i+1, nb)
		if v > b[len(b)-1] {
			i, b = i+1, nb
		}
	}
	j, _ := slices.BinarySearch(b, v)
	s.blocks[i] = slices.Insert(b, j, v)
}

// remove deletes one occurrence of v, if present.
func (s *rttSet) remove(v int64) {
	if len(s.blocks) == 0 {
		return
	}
	i := s.find(v)
	b := s.blocks[i]
	j, ok := slices.BinarySearch(b, v)
	if !ok {
		return
	}
	s.n--
	b = slices.Delete(b, j, j+1)
	if len(b) == 0 {
		s.free = append(s.free, b)
		s.blocks = slices.Delete(s.blocks, i, i+1)
		return
	}
	s.blocks[i] = b
}

// kth returns the value of rank k (0-based) in ascending order.
func (s *rttSet) kth(k int) int64 {
	for _, b := range s.blocks {
		if k < len(b) {
			return b[k]
		}
		k -= len(b)
	}
	panic("rttSet: rank out of range")
}

// kths writes the values of the ascending ranks ks into out in one pass.
func (s *rttSet) kths(ks []int, out []int64) {
	base, j := 0, 0
	for _, b := range s.blocks {
		for j < len(ks) && ks[j] < base+len(b) {
			out[j] = b[ks[j]-base]
			j++
		}
		base += len(b)
	}
}

func (s *rttSet) len() int { return s.n }
