/*
 * nbdmux-sparse-write OUT HEAD RESERVE SYNC: the last step of an image import. Reads the image's
 * bytes on stdin and writes them to OUT, a new file (0600, never an existing one), leaving every
 * all-zero 4 KiB block as a hole (as `qemu-img convert -S 4k` does), in writes of up to 1 MiB at
 * aligned offsets; then sets the length (a trailing hole too) and, when SYNC is `sync`, syncs.
 * `no-sync` is for a container's download: qemu-img reads it once and it is removed, so only the
 * raw image converted from it must reach the disk (a sync of a GiB: 0.3-0.8 s on the bench's disk).
 * The first HEAD bytes are also copied to stdout, so nbdmux can tell the format without reading
 * the stream itself. Once the file system has less than RESERVE bytes free after a batch, it
 * stops (nbdmux keeps that much free for its database and configs).
 *
 * Why a program: in Node every byte of a decompressed image crossed the event loop twice (read
 * from the decompressor, scanned for zeros, copied, written); here the decompressor's stdout is
 * this program's stdin and no byte reaches the daemon.
 *
 * Exit status: 0 done; an errno value (ENOSPC, EDQUOT, EIO...) when a read or write failed,
 * with the system's words on stderr; 2 for a bad command line; 3 when down to the reserve.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define BLOCK 4096
#define BATCH (1 << 20)
#define EXIT_RESERVE 3

static const unsigned char zero_block[BLOCK];
static unsigned char batch[BATCH] __attribute__((aligned(BLOCK)));

static int fail(const char *what) {
  int err = errno ? errno : EIO;
  fprintf(stderr, "%s: %s\n", what, strerror(err));
  return err > 255 ? EIO : err;
}

/* Fills `batch` from stdin: BATCH bytes, fewer only at the end of the stream; -1 on error. */
static ssize_t fill(void) {
  size_t got = 0;
  while (got < BATCH) {
    ssize_t n = read(STDIN_FILENO, batch + got, BATCH - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* The head, to the pipe nbdmux reads. */
static int send_head(size_t length) {
  for (size_t sent = 0; sent < length;) {
    ssize_t n = write(STDOUT_FILENO, batch + sent, length - sent);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    sent += (size_t)n;
  }
  return 0;
}

static int write_all(int fd, const unsigned char *data, size_t length, off_t offset) {
  while (length > 0) {
    ssize_t n = pwrite(fd, data, length, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    data += n;
    length -= (size_t)n;
    offset += n;
  }
  return 0;
}

/* Writes the runs of non-zero blocks of `batch[0..length)`, which lands at `position`. */
static int write_batch(int fd, size_t length, off_t position) {
  size_t run = 0;
  int in_run = 0;
  for (size_t block = 0; block < length; block += BLOCK) {
    size_t size = length - block < BLOCK ? length - block : BLOCK;
    int data = memcmp(batch + block, zero_block, size) != 0;
    if (data && !in_run) {
      run = block;
      in_run = 1;
    } else if (!data && in_run) {
      if (write_all(fd, batch + run, block - run, position + (off_t)run) < 0) return -1;
      in_run = 0;
    }
  }
  if (in_run && write_all(fd, batch + run, length - run, position + (off_t)run) < 0) return -1;
  return 0;
}

int main(int argc, char **argv) {
  int durable = argc == 5 && strcmp(argv[4], "sync") == 0;
  if (argc != 5 || (!durable && strcmp(argv[4], "no-sync") != 0)) {
    fprintf(stderr, "usage: nbdmux-sparse-write OUT HEAD_BYTES RESERVE_BYTES sync|no-sync\n");
    return 2;
  }
  size_t head = strtoul(argv[2], NULL, 10);
  unsigned long long reserve = strtoull(argv[3], NULL, 10);
  if (head > BATCH) head = BATCH;
  int fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return fail("open");
  /* A larger pipe lets the decompressor run ahead while a batch is written; the default still works. */
  fcntl(STDIN_FILENO, F_SETPIPE_SZ, BATCH);
  off_t position = 0;
  int head_sent = 0;
  for (;;) {
    ssize_t length = fill();
    if (length < 0) return fail("read");
    if (!head_sent) {
      size_t size = (size_t)length < head ? (size_t)length : head;
      /* nbdmux may have stopped listening (it has seen enough): that is no failure of the import. */
      signal(SIGPIPE, SIG_IGN);
      if (send_head(size) < 0 && errno != EPIPE) return fail("write head");
      close(STDOUT_FILENO);
      head_sent = 1;
    }
    if (length == 0) break;
    if (write_batch(fd, (size_t)length, position) < 0) return fail("write");
    position += length;
    struct statvfs fs;
    if (fstatvfs(fd, &fs) < 0) return fail("statvfs");
    if ((unsigned long long)fs.f_bavail * fs.f_frsize < reserve) {
      fprintf(stderr, "down to %llu free bytes\n", (unsigned long long)fs.f_bavail * fs.f_frsize);
      return EXIT_RESERVE;
    }
    if (length < BATCH) break;
  }
  if (ftruncate(fd, position) < 0) return fail("truncate");
  if (durable && fsync(fd) < 0) return fail("fsync");
  if (close(fd) < 0) return fail("close");
  return 0;
}
