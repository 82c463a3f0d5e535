package diag

// Checker codes of distillation stages (`stage NAME distill from TEACHER`), numbered
// apart from the other E04xx codes so that codes added beside them do not collide.
const CodeDistillUnknownTeacher Code = "E0450" // the teacher is not a stage of the train block
const CodeDistillTeacherLater Code = "E0451"   // the teacher is declared after its student
const CodeDistillVocab Code = "E0452"          // student and teacher have different vocabularies
const CodeDistillTemperature Code = "E0453"    // temperature <= 0
const CodeDistillWeights Code = "E0454"        // a negative loss weight, or both weights zero
const CodeDistillMisplaced Code = "E0455"      // a distillation key outside a distill stage, grow in one, or a distill stage without a teacher

var distillCodes = []Info{
	{CodeDistillUnknownTeacher, "a distill stage's teacher is not a stage of its train block"},
	{CodeDistillTeacherLater, "a distill stage's teacher is declared after it: the teacher must be trained first"},
	{CodeDistillVocab, "a distill stage's student has another vocabulary than its teacher"},
	{CodeDistillTemperature, "a distill stage's temperature must be positive"},
	{CodeDistillWeights, "a distill stage's soft_weight and hard_weight must be non-negative, and not both zero"},
	{CodeDistillMisplaced, "a distillation key (temperature, soft_weight, hard_weight, model, init) on a stage that does not distill, grow on one that does, or `distill` without `from TEACHER`"},
}
