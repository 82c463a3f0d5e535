package diag

// Checker codes of distillation stages (`stage NAME distill from TEACHER`), numbered
// apart from the other E04xx codes so that codes added beside them do not collide.
const (
	DistillUnknownTeacher Code = "E0450" // the teacher is not a stage of the train block
	DistillTeacherLater   Code = "E0451" // the teacher is declared after its student
	DistillVocab          Code = "E0452" // student and teacher have different vocabularies
	DistillTemperature    Code = "E0453" // temperature <= 0
	DistillWeights        Code = "E0454" // a negative loss weight, or both weights zero
	DistillMisplaced      Code = "E0455" // a distillation key outside a distill stage, grow in one, or a distill stage without a teacher
)

var distillCodes = []Info{
	{DistillUnknownTeacher, "a distill stage's teacher is not a stage of its train block"},
	{DistillTeacherLater, "a distill stage's teacher is declared after it: the teacher must be trained first"},
	{DistillVocab, "a distill stage's student has another vocabulary than its teacher"},
	{DistillTemperature, "a distill stage's temperature must be positive"},
	{DistillWeights, "a distill stage's soft_weight and hard_weight must be non-negative, and not both zero"},
	{DistillMisplaced, "a distillation key (temperature, soft_weight, hard_weight, model, init) on a stage that does not distill, grow on one that does, or `distill` without `from TEACHER`"},
}
