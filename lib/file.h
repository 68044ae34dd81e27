/* Opening files named by the user or by a snapshot, which may be anything:
 * a FIFO must not block the caller, a device or directory is refused. */
#ifndef MICROVM_FILE_H
#define MICROVM_FILE_H

#include <stddef.h>
#include <sys/stat.h>

/*
 * Open @path with @flags (O_RDONLY or O_RDWR; O_CLOEXEC is added) without
 * blocking, even on a FIFO, and check it is a regular file. Returns the fd
 * (blocking mode restored) and fills @st, or a negative errno: -EINVAL
 * when it is not a regular file (nothing stays open).
 */
int file_open_regular(const char *path, int flags, struct stat *st);

/*
 * Create a listening AF_UNIX stream socket (non-blocking, close-on-exec) at
 * @path that nobody but this user can ever connect to, whatever the umask:
 * the socket is bound inside a new private directory (mode 0700, a random
 * name next to @path), set to mode 0600 there, and renamed into place in one
 * step. An existing socket file at @path is replaced atomically (a stale
 * socket of an earlier run); anything else there is left alone and gives
 * -EEXIST. No path is checked and then used: the rename refuses to replace
 * (RENAME_NOREPLACE), or swaps (RENAME_EXCHANGE) and checks what it took out
 * before discarding it. Returns the fd and fills @st (the socket file's
 * device and inode, to recognise it later), or a negative errno with a
 * message in @err. Nothing is left behind on failure.
 */
int file_listen_unix_private(const char *path, int backlog, struct stat *st, char *err,
			     size_t errlen);

/*
 * Remove the socket file at @path if it is still the one described by @ours
 * (device and inode): it is first moved into a private directory and looked
 * at there, so another user's file that replaced it is never removed (it is
 * put back). 0, -ESTALE (not ours: left in place) or a negative errno.
 */
int file_unlink_socket_if_ours(const char *path, const struct stat *ours);

#endif
