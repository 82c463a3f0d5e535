// Command moec is the compiler for Mixture-of-Experts language models. It is a set of thin cobra commands that each call one library function.
//
//	moec check [--explain] FILE.moe   every error at once, or the fully resolved program
//	moec fmt [-w] FILE.moe...         canonical layout, comments kept
//	moec build FILE.moe               check, count, plan, generate code into out/<name>/
//	moec plan FILE.moe --stage S      a what-if plan printed to the terminal
//	moec run --stage S FILE.moe       train a stage here, from the previous stage's checkpoint
//	moec generate --checkpoint DIR    sample text with a KV cache
//	moec eval --checkpoint DIR        validation perplexity
//	moec compress --checkpoint DIR    int8/int4 weights and pruned experts, for serving
//	moec experiment FILE.moe          the experiments a file declares, with a results page
//	moec serve --checkpoint DIR       OpenAI-compatible HTTP serving with continuous batching
//	moec tokenize --tokenizer FILE    the token ids of a text (or --decode: the text of ids)
//	moec import hf config.json        a Hugging Face config (and weights) as a .moe model
//	moec export hf|megatron ...       Hugging Face checkpoints, Megatron-Core launch arguments
//
// Exit status: 0 success, 1 the input has errors, 2 wrong usage or another failure.
package main
