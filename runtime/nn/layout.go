package nn

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// ParamInfo names one trainable tensor, its structured identity and its shape, without its
// values.
type ParamInfo = params.Param

// ParamList lists the parameters New would create for m, in the same order and with the
// same names and shapes as Model.Params, without allocating them: code generators need
// the layout of models far too large to instantiate (a trillion-parameter stage). It is
// compiler/params' walker behind the runtime's feature check; TestLayoutMatchesNew holds
// New to it on models that take every naming branch.
func ParamList(m *program.Model) ([]ParamInfo, error) {
	if m == nil {
		return nil, fmt.Errorf("nn: nil model")
	}
	if err := checkSupported(m); err != nil {
		return nil, err
	}
	if _, err := resolveDims(m); err != nil {
		return nil, err
	}
	out, err := params.Walk(m)
	if err != nil {
		return nil, fmt.Errorf("nn: %w", err)
	}
	return out, nil
}
