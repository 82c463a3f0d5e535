// Package atomicfile writes a file so that readers see either its old content or the
// complete new content, never a torn write.
//
// In: a path, the bytes and a permission. Out: the file, written through a temporary file
// in the same directory that is synced and then renamed over the target (and the directory
// synced, so the rename survives a crash on file systems that need it).
package atomicfile
