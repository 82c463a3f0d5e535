package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// lowerMoE stands in for the MoE lowering (moe.go) until it is merged.
func lowerMoE(p *step.Program, _ *program.Model, i int) ([]Launch, error) {
	return nil, fmt.Errorf("the MoE ops (%s) are not lowered to CUDA yet", p.Ops[i].Kind)
}
