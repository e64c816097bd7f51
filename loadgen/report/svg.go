package report

import (
	"fmt"
	"math"
	"strings"
)

// Series is one named line of a plot.
type Series struct {
	Name   string
	Points [][2]float64
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

const (
	svgW, svgH             = 640, 400
	padL, padR, padT, padB = 70, 80, 40, 50
)

func svgHeader(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(b, `<text x="%d" y="22" text-anchor="middle" font-size="14">%s</text>`+"\n", svgW/2, esc(title))
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padL, padT, svgW-padL-padR, svgH-padT-padB)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// nines maps a percentile to -log10(1-q/100), capped at 5 (99.999).
func nines(q float64) float64 {
	if q >= 99.999 {
		return 5
	}
	return -math.Log10(1 - q/100)
}

// LatencySVG plots latency (ms, log scale) against percentile (0 to
// 99.999, spaced by nines) for each series of (percentile, ms) points.
func LatencySVG(title string, series []Series) string {
	var b strings.Builder
	svgHeader(&b, title)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			if p[1] > 0 {
				lo, hi = math.Min(lo, p[1]), math.Max(hi, p[1])
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0.01, 1
	}
	ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yhi <= ylo {
		yhi = ylo + 1
	}
	pw, ph := float64(svgW-padL-padR), float64(svgH-padT-padB)
	x := func(q float64) float64 { return padL + nines(q)/5*pw }
	y := func(ms float64) float64 {
		if ms <= 0 {
			ms = lo
		}
		return padT + ph - (math.Log10(ms)-ylo)/(yhi-ylo)*ph
	}
	for _, q := range []float64{0, 90, 99, 99.9, 99.99, 99.999} {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%g%%</text>`+"\n",
			x(q), padT, x(q), svgH-padB, x(q), svgH-padB+16, q)
	}
	for e := ylo; e <= yhi; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g ms</text>`+"\n",
			padL, y(v), svgW-padR, y(v), padL-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">percentile</text>`+"\n", padL+int(pw/2), svgH-12)
	for i, s := range series {
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		c := palette[i%len(palette)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", svgW-padR+6, padT+16+16*i, c, esc(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// ScalingSVG plots throughput (events/s, left axis) and efficiency
// (throughput / (shards x one-shard throughput), right axis, 0 to 1.2)
// against shard count. points are (shards, events/s), sorted by shards.
func ScalingSVG(title string, points [][2]float64) string {
	var b strings.Builder
	svgHeader(&b, title)
	pw, ph := float64(svgW-padL-padR), float64(svgH-padT-padB)
	maxS, maxT := 1.0, 1.0
	for _, p := range points {
		maxS, maxT = math.Max(maxS, p[0]), math.Max(maxT, p[1])
	}
	maxT *= 1.1
	x := func(s float64) float64 {
		if maxS <= 1 {
			return padL + pw/2
		}
		return padL + (s-1)/(maxS-1)*pw
	}
	yt := func(t float64) float64 { return padT + ph - t/maxT*ph }
	ye := func(e float64) float64 { return padT + ph - e/1.2*ph }
	for i := 0; i <= 5; i++ {
		v := maxT * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n",
			padL, yt(v), svgW-padR, yt(v), padL-6, yt(v)+4, v)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f">%.2f</text>`+"\n", svgW-padR+6, ye(1.2*float64(i)/5)+4, 1.2*float64(i)/5)
	}
	for _, p := range points {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", x(p[0]), svgH-padB+16, p[0])
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">shards</text>`+"\n", padL+int(pw/2), svgH-12)
	var tp, ep []string
	base := 0.0
	if len(points) > 0 && points[0][0] > 0 {
		base = points[0][1] / points[0][0]
	}
	for _, p := range points {
		tp = append(tp, fmt.Sprintf("%.1f,%.1f", x(p[0]), yt(p[1])))
		if base > 0 {
			ep = append(ep, fmt.Sprintf("%.1f,%.1f", x(p[0]), ye(p[1]/(p[0]*base))))
		}
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(p[0]), yt(p[1]), palette[0])
	}
	fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", palette[0], strings.Join(tp, " "))
	fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-dasharray="6 4" points="%s"/>`+"\n", palette[1], strings.Join(ep, " "))
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">events/s (left)</text>`+"\n", padL+8, padT+16, palette[0])
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">efficiency vs 1 shard (right)</text>`+"\n", padL+8, padT+32, palette[1])
	b.WriteString("</svg>\n")
	return b.String()
}
