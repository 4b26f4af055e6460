package bench

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

// Data kinds.
const (
	Random = "random" // incompressible
	Text   = "text"   // weather-observation rows; zstd shrinks them to about a fifth
)

// writeData writes size bytes of the given kind to path; seed makes each
// file's content its own, so that runs do not deduplicate against each other.
func writeData(path, kind string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var src io.Reader
	switch kind {
	case Random:
		var key [32]byte
		copy(key[:], fmt.Sprintf("ddstore-bench-%d", seed))
		src = rand.NewChaCha8(key)
	case Text:
		src = newWeather(seed)
	default:
		f.Close()
		return fmt.Errorf("bench: unknown data kind %q", kind)
	}
	if _, err := io.CopyN(w, src, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// weather generates CSV rows of observations: a timestamp, a station and
// numeric columns that drift slowly, like a real sensor feed.
type weather struct {
	rng      *rand.Rand
	t        int64 // seconds since 2026-01-01
	temp     float64
	pressure float64
	humidity float64
	wind     float64
	station  int
	buf      []byte
}

func newWeather(seed uint64) *weather {
	return &weather{rng: rand.New(rand.NewPCG(seed, 0x77ea7e4)), temp: 12, pressure: 1013, humidity: 70, wind: 4, t: int64(seed%1000) * 86400}
}

func (w *weather) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(w.buf) == 0 {
			w.row()
		}
		c := copy(p[n:], w.buf)
		w.buf = w.buf[c:]
		n += c
	}
	return n, nil
}

func (w *weather) row() {
	w.t += 60
	w.station = (w.station + 1) % 64
	w.temp += (w.rng.Float64() - 0.5) * 0.2
	w.pressure += (w.rng.Float64() - 0.5) * 0.1
	w.humidity = min(100, max(5, w.humidity+(w.rng.Float64()-0.5)))
	w.wind = max(0, w.wind+(w.rng.Float64()-0.5)*0.3)
	day := w.t / 86400
	b := w.buf[:0]
	b = fmt.Appendf(b, "2026-%02d-%02dT%02d:%02d:00Z,ST%03d,", 1+day/28%12, 1+day%28, w.t/3600%24, w.t/60%60, w.station)
	b = strconv.AppendFloat(b, w.temp, 'f', 1, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, w.pressure, 'f', 1, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, w.humidity, 'f', 0, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, w.wind, 'f', 1, 64)
	b = append(b, '\n')
	w.buf = b
}

// changeInPlace overwrites fraction of the file's bytes with new random bytes,
// in one contiguous region per 100 MiB (at least one), spread evenly: the kind
// of edit a user makes to a large file.
func changeInPlace(path string, fraction float64, seed uint64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	regions := max(1, size/(100<<20))
	per := int64(float64(size)*fraction) / regions
	rng := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, per)
	for i := range regions {
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		off := size/regions*i + size/regions/2 - per/2
		if _, err := f.WriteAt(buf, max(0, off)); err != nil {
			return err
		}
	}
	return f.Sync()
}
