package plan

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// A compressed serve (`serve … { compressed = true }`) is planned on the model as its
// compress block leaves it: the experts it keeps, and each kind of matrix at the bytes
// runtime/compress stores it in (int8 or int4 values with their float32 scales). A kind the
// block leaves unquantised, and every vector (norms, biases, routers), weighs the serving
// precision's bytes, as it does uncompressed.

// compress applies cp to the served model: it returns the model with only the kept experts
// and sets the bytes a routed expert's parameter and any other parameter weigh, averaged
// over the model's own matrices, and the text that says what was done.
func (ss *serveSetup) compress(cp *program.Compress, precisionBytes float64) (*program.Model, error) {
	if cp == nil {
		return nil, fmt.Errorf("model %s has no compress block to serve it compressed with", ss.serve.Model)
	}
	cw, err := CompressedWeights(ss.model, cp, precisionBytes)
	if err != nil {
		return nil, err
	}
	ss.denseBytes = cw.OtherBytes / cw.OtherParams
	if cw.ExpertParams > 0 {
		ss.expertBytes = cw.ExpertBytes / cw.ExpertParams
	}
	ss.compression = compressionText(cp, cw.Model)
	return cw.Model, nil
}

// Compressed is what a model's weights weigh served as a compress block leaves them.
type Compressed struct {
	Model *program.Model // the served model: the kept experts only
	params.Weights
}

// CompressedWeights weighs m served as cp leaves it: the experts cp keeps, each kind of
// matrix at its quantised bytes (values and float32 scales, as runtime/compress stores
// them), and what cp leaves unquantised at precisionBytes a value.
func CompressedWeights(m *program.Model, cp *program.Compress, precisionBytes float64) (Compressed, error) {
	if cp.KeepExperts > 0 && m.MoE != nil && cp.KeepExperts < m.MoE.Experts {
		pm, moe := *m, *m.MoE
		moe.Experts = cp.KeepExperts
		pm.MoE = &moe
		m = &pm
	}
	layout, err := params.Walk(m)
	if err != nil {
		return Compressed{}, fmt.Errorf("listing the parameters of %s to weigh them compressed: %w", m.Name, err)
	}
	c := Compressed{Model: m, Weights: params.Weigh(layout, params.Schemes(cp), precisionBytes)}
	if c.OtherParams == 0 {
		return Compressed{}, errors.New("the model lists no parameters")
	}
	return c, nil
}

// compressionText says what cp does, kinds grouped by scheme: "compress m: int4 g128
// experts; int8 dense, embed, head; 768 experts kept per MoE layer".
func compressionText(cp *program.Compress, served *program.Model) string {
	var order []string
	kinds := map[string][]string{}
	for _, k := range []struct{ kind, scheme string }{{"experts", cp.Experts}, {"dense", cp.Dense}, {"embed", cp.Embed}, {"head", cp.Head}} {
		scheme := k.scheme
		switch scheme {
		case "int4":
			scheme = fmt.Sprintf("int4 g%d", cp.Group)
		case "int8":
		default:
			scheme = "at the serving precision:"
		}
		if kinds[scheme] == nil {
			order = append(order, scheme)
		}
		kinds[scheme] = append(kinds[scheme], k.kind)
	}
	parts := make([]string, len(order))
	for i, scheme := range order {
		parts[i] = scheme + " " + strings.Join(kinds[scheme], ", ")
	}
	text := "compress " + cp.Name + ": " + strings.Join(parts, "; ")
	if cp.KeepExperts > 0 && served.MoE != nil {
		text += fmt.Sprintf("; %d experts kept per MoE layer", served.MoE.Experts)
	}
	return text
}

// parameter, 1.02 B per other".
