// Package compilecache keeps what a compiler makes of inputs that do not change between
// runs (moec's CUDA emulation objects and each kernel file's PTX), content-addressed: an
// entry is a folder named by the SHA-256 of the compiler, its arguments and its input
// files, written whole under a temporary name and renamed into place.
package compilecache
