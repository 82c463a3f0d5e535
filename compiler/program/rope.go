package program

import "math"

// RopeType is a rotary scaling: how the rotary frequencies are stretched so a model reaches
// beyond the context it was pretrained at.
type RopeType string

const (
	RopeLinear  RopeType = "linear"  // position interpolation: every frequency divided by the factor
	RopeDynamic RopeType = "dynamic" // dynamic NTK: a larger base once a sequence outgrows seq_len
	RopeYarn    RopeType = "yarn"    // YaRN: a ramp between interpolated and original frequencies, and a factor on cos and sin
	RopeLlama3  RopeType = "llama3"  // Llama 3.1: long wavelengths divided by the factor, short ones kept, a smooth band between
	// RopeLongrope: Phi-3's per-pair factors, one list up to the pretrained context and one
	// beyond it, and a factor on cos and sin.
	RopeLongrope RopeType = "longrope"
)

// RopeTypes are the rotary scalings moec computes, in the order the language lists them.
func RopeTypes() []RopeType {
	return []RopeType{RopeLinear, RopeDynamic, RopeYarn, RopeLlama3, RopeLongrope}
}

// RopeScaling is a rotary scaling with its parameters, as transformers' rope_scaling (v5:
// rope_parameters) holds them. Fields a type does not read are zero.
type RopeScaling struct {
	Type   RopeType
	Factor float64 // the context extension factor (>= 1)
	// OriginalSeqLen is the context the model was pretrained at (yarn's ramp, llama3's
	// bands); 0 means the model's SeqLen.
	OriginalSeqLen int64 `json:",omitempty"`
	// Yarn: the rotation counts bounding the ramp (0: transformers' 32 and 1), mscale and
	// mscale_all_dim (DeepSeek's attention factor get_mscale(f, mscale) / get_mscale(f,
	// mscale_all_dim) when both are set), an explicit attention factor (0: derived), and
	// whether the ramp's bounds are kept fractional (truncate = false).
	BetaFast        float64 `json:",omitempty"`
	BetaSlow        float64 `json:",omitempty"`
	Mscale          float64 `json:",omitempty"`
	MscaleAllDim    float64 `json:",omitempty"`
	AttentionFactor float64 `json:",omitempty"`
	NoTruncate      bool    `json:",omitempty"`
	// Llama 3: the band limits as fractions of OriginalSeqLen's wavelength (1 and 4 in the
	// released models).
	LowFreqFactor  float64 `json:",omitempty"`
	HighFreqFactor float64 `json:",omitempty"`
	// Longrope: the per-pair factors (head_dim/2 each) for sequences up to OriginalSeqLen
	// and beyond it; AttentionFactor (0: sqrt(1 + ln(s)/ln(OriginalSeqLen)) for s =
	// SeqLen/OriginalSeqLen) multiplies cos and sin.
	ShortFactor []float64 `json:",omitempty"`
	LongFactor  []float64 `json:",omitempty"`
}

// RopeFrequencies returns the inverse frequencies of a rotary head of dim features (dim/2
// of them, rounded to float32 as transformers holds them) and the factor both cos and sin
// are multiplied by, for a table of positions positions. It computes what transformers'
// ROPE_INIT_FUNCTIONS (modeling_rope_utils.py) compute for the same parameters: without a
// scaling, exactly the frequencies moec has always used; dynamic NTK changes nothing until
// positions exceed SeqLen, as transformers recomputes its frequencies for the longest
// sequence seen.
func (m *Model) RopeFrequencies(dim, positions int) (inv []float32, attention float64) {
	base := m.RopeBase
	if base == 0 {
		base = 10000
	}
	half := dim / 2
	inv = make([]float32, half)
	plain := func(base float64) {
		for i := range inv {
			inv[i] = float32(1 / math.Pow(base, float64(2*i)/float64(dim)))
		}
	}
	rs := m.RopeScaling
	if rs == nil {
		plain(base)
		return inv, 1
	}
	orig := float64(rs.OriginalSeqLen)
	if orig == 0 {
		orig = float64(m.SeqLen)
	}
	switch rs.Type {
	case RopeLinear:
		plain(base)
		for i := range inv {
			inv[i] = float32(float64(inv[i]) / rs.Factor)
		}
	case RopeDynamic:
		if n := float64(positions); n > float64(m.SeqLen) && m.SeqLen > 0 && dim > 2 {
			base *= math.Pow(rs.Factor*n/float64(m.SeqLen)-(rs.Factor-1), float64(dim)/float64(dim-2))
		}
		plain(base)
	case RopeYarn:
		return yarnFrequencies(rs, base, dim, orig), yarnAttention(rs)
	case RopeLongrope:
		// transformers' _compute_longrope_parameters, in float32 as torch computes.
		ext := rs.ShortFactor
		if float64(positions) > orig {
			ext = rs.LongFactor
		}
		for i := range inv {
			f := float32(1)
			if i < len(ext) {
				f = float32(ext[i])
			}
			inv[i] = 1 / (f * float32(math.Pow(base, float64(float32(2*i)/float32(dim)))))
		}
		attention := rs.AttentionFactor
		if attention == 0 {
			attention = 1
			if s := float64(m.SeqLen) / orig; s > 1 {
				attention = math.Sqrt(1 + math.Log(s)/math.Log(orig))
			}
		}
		return inv, attention
	case RopeLlama3:
		plain(base)
		// In float32 operation by operation, as torch computes on the float32 inv_freq.
		low, high := orig/rs.LowFreqFactor, orig/rs.HighFreqFactor
		factor, lowF, highF := float32(rs.Factor), float32(rs.LowFreqFactor), float32(rs.HighFreqFactor)
		for i, f := range inv {
			wavelen := float32(2 * math.Pi / float64(f))
			switch {
			case float64(wavelen) < high:
			case float64(wavelen) > low:
				inv[i] = f / factor
			default:
				smooth := (float32(orig/float64(wavelen)) - lowF) / (highF - lowF)
				inv[i] = (1-smooth)*f/factor + smooth*f
			}
		}
	default:
		plain(base)
	}
	return inv, 1
}

// yarnFrequencies: transformers' _compute_yarn_parameters. Dimension pair i keeps its
// original frequency below the ramp, takes the interpolated one (divided by the factor)
// above it, and a linear mix between.
func yarnFrequencies(rs *RopeScaling, base float64, dim int, orig float64) []float32 {
	betaFast, betaSlow := rs.BetaFast, rs.BetaSlow
	if betaFast == 0 {
		betaFast = 32
	}
	if betaSlow == 0 {
		betaSlow = 1
	}
	correction := func(rotations float64) float64 {
		return float64(dim) * math.Log(orig/(rotations*2*math.Pi)) / (2 * math.Log(base))
	}
	low, high := correction(betaFast), correction(betaSlow)
	if !rs.NoTruncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = math.Max(low, 0), math.Min(high, float64(dim-1))
	if low == high {
		high += 0.001 // transformers' guard against a zero-width ramp
	}
	// In float32 operation by operation, as torch computes on float32 tensors.
	inv := make([]float32, dim/2)
	factor := float32(rs.Factor)
	for i := range inv {
		posFreq := float32(math.Pow(base, float64(float32(2*i)/float32(dim))))
		extrapolation, interpolation := 1/posFreq, 1/(factor*posFreq)
		ramp := float32(math.Min(math.Max(float64(float32(float64(i)-low))/(high-low), 0), 1))
		keep := 1 - ramp // the share of the original frequency
		inv[i] = interpolation*(1-keep) + extrapolation*keep
	}
	return inv
}

// yarnAttention is yarn's factor on cos and sin.
func yarnAttention(rs *RopeScaling) float64 {
	if rs.AttentionFactor > 0 {
		return rs.AttentionFactor
	}
	mscale := func(scale, m float64) float64 {
		if scale <= 1 {
			return 1
		}
		return 0.1*m*math.Log(scale) + 1
	}
	if rs.Mscale != 0 && rs.MscaleAllDim != 0 {
		return mscale(rs.Factor, rs.Mscale) / mscale(rs.Factor, rs.MscaleAllDim)
	}
	return mscale(rs.Factor, 1)
}

// RopeTable returns cos and sin of position·θ_i for positions [from, to) and i < dim/2,
// row after row, times the scaling's attention factor: the tables runtime/nn and
// runtime/exec rotate with. The angle is rounded to float32 first, as transformers
// computes it.
func (m *Model) RopeTable(dim, from, to int) (cos, sin []float64) {
	inv, attention := m.RopeFrequencies(dim, to)
	half := dim / 2
	cos, sin = make([]float64, 0, (to-from)*half), make([]float64, 0, (to-from)*half)
	for p := from; p < to; p++ {
		for i := 0; i < half; i++ {
			ang := float64(float32(p) * inv[i])
			c, s := math.Cos(ang), math.Sin(ang)
			if attention != 1 {
				c, s = c*attention, s*attention
			}
			cos, sin = append(cos, c), append(sin, s)
		}
	}
	return cos, sin
}
