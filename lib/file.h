/* Opening files named by the user or by a snapshot, which may be anything:
 * a FIFO must not block the caller, a device or directory is refused. */
#ifndef MICROVM_FILE_H
#define MICROVM_FILE_H

#include <sys/stat.h>

/*
 * Open @path with @flags (O_RDONLY or O_RDWR; O_CLOEXEC is added) without
 * blocking, even on a FIFO, and check it is a regular file. Returns the fd
 * (blocking mode restored) and fills @st, or a negative errno: -EINVAL
 * when it is not a regular file (nothing stays open).
 */
int file_open_regular(const char *path, int flags, struct stat *st);

#endif
