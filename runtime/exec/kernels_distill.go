package exec

// Distillation: the student's loss against the teacher's soft targets (distill_loss), and
// the teacher that computes them, a forward-only program run on the same tokens.

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// distillLoss runs a distill_loss op. Under tp each rank holds a slice of the vocabulary
// and the op runs in four passes (pass=max, pass=sum, pass=cross, pass=loss) between the
// reductions of their rows (kernels_distill_tp.go).
func (e *Executor) distillLoss(op *step.Op) error {
	f, in, out := e.f32, op.In, op.Out
	Vl := e.p.Buffers[in[0]].Shape[1]
	first := e.p.Coord.TP * Vl
	var dl []float32 // an evaluation program's loss has no gradient to write
	if len(out) > 1 {
		dl = f[out[1]]
	}
	switch {
	case op.Pass == step.LossMax:
		DistillLossMax(f[in[0]], f[in[1]], f[out[0]], Vl)
	case op.Pass == step.LossSum:
		DistillLossSum(f[in[0]], e.i32[in[1]], f[in[2]], f[in[3]], f[out[0]], Vl, first, op.Distill)
	case op.Pass == step.LossCross:
		DistillLossCross(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[out[0]], Vl, op.Distill)
	case len(in) > 3:
		e.DistillLossParallel(f[in[0]], e.i32[in[1]], f[in[2]], f[in[3]], f[in[4]], f[in[5]], f[out[0]], dl, Vl, first, op.Distill)
	default:
		e.DistillLoss(f[in[0]], e.i32[in[1]], f[in[2]], f[out[0]], dl, Vl, op.Distill)
	}
	return nil
}

// DistillLoss writes the micro-batch's mean of hard·CE + soft·T²·KL(p_t ‖ p_s), where
// p = softmax(logits/T), and the logits' gradient (dl nil: the loss alone)
// hard·(softmax(z) − onehot) + soft·T·(p_s − p_t), scaled by the step's mean; it adds the
// cross-entropy and the soft loss T²·KL to the step's terms. The hard part is computed as
// CrossEntropy computes it, so with soft = 0 and hard = 1 both write the same bits.
func (k *Kernels) DistillLoss(logits []float32, targets []int32, teacher []float32, loss, dl []float32, V int, d step.Distill) {
	n := len(logits) / V
	scale := k.gradSeed() / float64(n)
	T, invT := d.Temperature, 1/d.Temperature
	terms := grow(&k.scratch.terms, 2*n) // each row's cross-entropy, then its T²·KL
	parallel(n, func(r0, r1 int) {
		for i := r0; i < r1; i++ {
			row, trow := logits[i*V:(i+1)*V], teacher[i*V:(i+1)*V]
			mx := row[0]
			for _, v := range row {
				mx = max(mx, v)
			}
			lse := float64(mx) + math.Log(expSum(row, float64(mx), 1, nil))
			terms[i] = lse - float64(row[targets[i]])
			// log-softmax at T of the student and the teacher: shifted by their maxima.
			tmx := trow[0]
			for _, v := range trow {
				tmx = max(tmx, v)
			}
			var ss, ts float64
			for j := range row {
				ss += math.Exp((float64(row[j]) - float64(mx)) * invT)
				ts += math.Exp((float64(trow[j]) - float64(tmx)) * invT)
			}
			slse, tlse := math.Log(ss), math.Log(ts)
			var kl float64
			for j := range row {
				lt := (float64(trow[j])-float64(tmx))*invT - tlse
				ls := (float64(row[j])-float64(mx))*invT - slse
				if pt := math.Exp(lt); pt > 0 {
					kl += pt * (lt - ls)
				}
			}
			terms[n+i] = T * T * kl
			if dl == nil {
				continue
			}
			drow := dl[i*V : (i+1)*V]
			hard := scale * d.HardWeight
			expSum(row, lse, hard, drow)
			drow[targets[i]] -= float32(hard)
			if d.SoftWeight == 0 {
				continue
			}
			soft := scale * d.SoftWeight * T
			for j := range drow {
				ps := math.Exp((float64(row[j])-float64(mx))*invT - slse)
				pt := math.Exp((float64(trow[j])-float64(tmx))*invT - tlse)
				drow[j] += float32(soft * (ps - pt))
			}
		}
	})
	k.addDistillTerms(terms, n, loss, d)
}

// addDistillTerms writes the micro-batch's mean loss from its n rows' cross-entropies
// (terms[:n]) and soft losses T²·KL (terms[n:2n]), added in row order, and adds both
// means to the step's terms.
func (k *Kernels) addDistillTerms(terms []float64, n int, loss []float32, d step.Distill) {
	var ce, kl float64
	for i := 0; i < n; i++ {
		ce += terms[i]
		kl += terms[n+i]
	}
	ce, kl = ce/float64(n), kl/float64(n)
	loss[0] = float32(d.HardWeight*ce + d.SoftWeight*kl)
	k.stats.CE += ce * k.lossScale()
	k.stats.Distill += kl * k.lossScale()
	k.stats.Loss = distilledLoss(d, k.stats.CE, k.stats.Distill)
	if m := k.m.MoE; m != nil {
		k.stats.Loss += m.BalanceLoss*k.stats.Balance + m.ZLoss*k.stats.ZLoss
	}
}

// distilledLoss is the step's loss from its cross-entropy and soft loss: hard·CE +
// soft·Distill under distillation, else the cross-entropy.
func distilledLoss(d step.Distill, ce, soft float64) float64 {
	if !d.On() {
		return ce
	}
	return d.HardWeight*ce + d.SoftWeight*soft
}

// Teacher is a distillation stage's teacher: the forward-only program (step.Evaluation)
// of the teacher's model on one rank, holding its weights, run on a student's micro-batch
// to give the logits the student's distill_loss reads. It keeps no gradient, optimizer
// state or activation for a backward.
//
// Under tp every rank of a replica holds the whole teacher and runs its whole forward,
// then keeps its slice of the vocabulary (Fill): the teacher needs no communicator of its
// own beside the student's (in process or under mpirun), any teacher the one-rank program
// lowers can teach (talking heads included, which tp refuses), and each rank's slice is
// the same bits as tp 1's teacher gives. The cost is tp copies of the teacher's weights
// and forward per replica.
type Teacher struct {
	ex     *Executor
	logits int // the logits buffer of the program's one micro-batch
	vocab  int
}

// NewTeacher builds the teacher of model m for micro-batches of mb sequences of seqLen
// tokens, holding weights (a checkpoint's tensors in the single-rank layout).
func NewTeacher(m *program.Model, mb, seqLen int, weights []safetensors.Tensor) (*Teacher, error) {
	progs, err := step.Lower(m, step.Batch{MicroBatch: mb, SeqLen: seqLen, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		return nil, fmt.Errorf("exec: the teacher (model %s): %w", m.Name, err)
	}
	ev, err := step.Evaluation(progs[0])
	if err != nil {
		return nil, fmt.Errorf("exec: the teacher (model %s): %w", m.Name, err)
	}
	ex, err := New(ev, m, nil)
	if err != nil {
		return nil, fmt.Errorf("exec: the teacher (model %s): %w", m.Name, err)
	}
	if err := ex.LoadTensors(weights); err != nil {
		return nil, fmt.Errorf("exec: the teacher's weights: %w", err)
	}
	t := &Teacher{ex: ex, logits: -1, vocab: int(m.Vocab)}
	for i, b := range ev.Buffers {
		if b.Name == "logits@0" {
			t.logits = i
		}
	}
	if t.logits < 0 {
		return nil, fmt.Errorf("exec: the teacher's program (model %s) has no logits", m.Name)
	}
	return t, nil
}

// Logits runs the teacher on one micro-batch of sequences (B·(T+1) tokens) and returns
// its logits, [B·T, vocabulary], valid until the next call. The teacher runs in inference
// mode: every layer computes its own attention weights, as evaluation does.
func (t *Teacher) Logits(seqs []int32, o Options) ([]float32, error) {
	o.Inference = true
	if _, err := t.ex.Run([][]int32{seqs}, o); err != nil {
		return nil, fmt.Errorf("exec: the teacher's forward: %w", err)
	}
	return t.ex.f32[t.logits], nil
}

// Fill runs the teacher on one micro-batch (as Logits) and writes into dst the columns
// [first, first+Vl) of each row of its logits: a vocabulary-parallel student's slice,
// the columns its tp rank's head computes (the whole rows when Vl is the vocabulary).
// Every tp rank runs the whole teacher, so the slices are those of the same rows.
func (t *Teacher) Fill(dst []float32, seqs []int32, Vl, first int, o Options) error {
	logits, err := t.Logits(seqs, o)
	if err != nil {
		return err
	}
	V := t.ex.p.Buffers[t.logits].Shape[1]
	n := len(logits) / V
	if Vl < 1 || first < 0 || first+Vl > V || len(dst) != n*Vl {
		return fmt.Errorf("exec: the teacher wrote %d rows of %d logits, the student reads %d values of columns [%d, %d)", n, V, len(dst), first, first+Vl)
	}
	for i := 0; i < n; i++ {
		copy(dst[i*Vl:(i+1)*Vl], logits[i*V+first:i*V+first+Vl])
	}
	return nil
}

// SetTeacher gives a distilling program its teacher (nil: none). The teacher's
// vocabulary must be the student's.
func (e *Executor) SetTeacher(t *Teacher) error {
	if t != nil && t.vocab != e.d.V {
		return fmt.Errorf("exec: the teacher predicts %d tokens, the student %d", t.vocab, e.d.V)
	}
	e.teacher = t
	return nil
}

// Distills reports whether the program's loss reads a teacher's logits.
func (e *Executor) Distills() bool {
	for _, b := range e.p.Buffers {
		if mi, name := microOf(b.Name); mi >= 0 && b.Kind == step.KindInput && name == "teacher_logits" {
			return true
		}
	}
	return false
}

// FillTeacherLogits runs the teacher on each of this rank's micro-batches whose
// teacher_logits input the program reads and copies the rank's slice of the vocabulary
// (under tp) into it, as Run does before the step's first op; it returns the buffers it
// filled, whose values Buffer gives. micro holds every replica's micro-batches in turn, as
// Local.Step takes them (replica r takes micro[r·M:(r+1)·M]). A runner that executes the
// program elsewhere (runtime/train's GPU engine) copies the buffers into its own memory
// before its step.
func (e *Executor) FillTeacherLogits(micro [][]int32, o Options) ([]int, error) {
	c, M := e.p.Coord, e.p.Batch.Micro
	if (c.DP+1)*M > len(micro) {
		return nil, fmt.Errorf("exec: rank %d: %d micro-batches for %d replicas of %d", e.p.Rank, len(micro), e.p.Layout.DP, M)
	}
	return e.fillTeacherLogits(micro[c.DP*M:(c.DP+1)*M], o)
}

// fillTeacherLogits fills the teacher_logits inputs of this replica's micro-batches
// (FillTeacherLogits; Run before the step's first op) and returns the buffers it filled.
func (e *Executor) fillTeacherLogits(micro [][]int32, o Options) ([]int, error) {
	var filled []int
	for i, b := range e.p.Buffers {
		if b.Kind != step.KindInput || e.f32[i] == nil {
			continue
		}
		mi, name := microOf(b.Name)
		if name != "teacher_logits" {
			continue
		}
		if e.teacher == nil {
			return nil, fmt.Errorf("exec: the program distills and has no teacher (SetTeacher)")
		}
		Vl := b.Shape[1] // under tp, this rank's slice of the vocabulary
		if err := e.teacher.Fill(e.f32[i], micro[mi], Vl, e.p.Coord.TP*Vl, o); err != nil {
			return nil, fmt.Errorf("micro-batch %d: %w", mi, err)
		}
		filled = append(filled, i)
	}
	return filled, nil
}

// SetTeacher gives every rank whose program distills a teacher of model m holding
// weights (each rank its own: the ranks run at once).
func (lc *Local) SetTeacher(m *program.Model, weights []safetensors.Tensor) error {
	for _, ex := range lc.Ranks {
		if !ex.Distills() {
			continue
		}
		t, err := NewTeacher(m, ex.p.Batch.MicroBatch, ex.p.Batch.SeqLen, weights)
		if err != nil {
			return err
		}
		if err := ex.SetTeacher(t); err != nil {
			return err
		}
	}
	return nil
}
