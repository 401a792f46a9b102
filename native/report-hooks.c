/*
 * Loaded with LD_PRELOAD into nbd-server processes beside the fast-start shim
 * (src/supervisor/fast-start.ts).
 *
 * nbd-server runs its prerun and postrun commands with system(): a fork and an exec of /bin/sh
 * for the prerun, about 3.5 ms between the client's choice of an export and the answer it waits
 * for; and for the postrun a shell, a subshell and an exec of nbdmux-socket-sent before the client
 * sees its connection close. Those commands are nbdmux's own (src/supervisor/nbd-config.ts):
 * this file recognises them word for word and does in process what the shell would do, with the
 * same lines on the report pipe, the same waits and the same exit status. Any other command,
 * or one of ours changed in any way this file does not know, runs through the real system().
 *
 * The shapes recognised, where REPORT is "<digits> <digits>" or "state <digits>" and WORD, PATH
 * and SECONDS are taken from the command itself:
 *   trap '' PIPE; echo REPORT >&3; exit 0
 *   trap '' PIPE; echo REPORT >&3; read -r verdict <&3; [ "$verdict" = WORD ]
 *   trap '' PIPE; echo ended[ $(PATH 2>/dev/null)] >&3 && while read -r reply <&3; do [ "$reply" = WORD ] && exit 0; done; sleep SECONDS; exit 0
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "bytes-acked.h"

#define REPORT_FD 3
/* Longer than any line nbdmux writes on the pipe; the rest of a longer line is read and dropped, as the shell would not match it either. */
#define MAX_LINE 128
#define MAX_WORD 32

/* The shell's exit status as system() returns it. */
#define EXITED(code) ((code) << 8)

static const char head[] = "trap '' PIPE; echo ";
static const char to_pipe[] = " >&3";

/* Writes all of `line` with SIGPIPE blocked in this thread (the shell's trap '' PIPE): 0, or -1 when the daemon is gone. */
static int write_line(const char *line)
{
	sigset_t pipe_signal, old;
	sigemptyset(&pipe_signal);
	sigaddset(&pipe_signal, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_signal, &old);
	size_t left = strlen(line);
	int result = 0;
	while (left > 0) {
		ssize_t n = write(REPORT_FD, line, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			result = -1;
			break;
		}
		line += n;
		left -= (size_t)n;
	}
	if (result < 0 && errno == EPIPE) {
		/* Blocked, the signal is pending: take it, so it is never delivered once the mask is restored. */
		struct timespec now = { 0, 0 };
		sigtimedwait(&pipe_signal, NULL, &now);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return result;
}

/*
 * One line from the pipe, a byte at a time like the shell's read (what follows it stays for the
 * next reader): 0 for a whole line, 1 for a last one the pipe's end cut short (the shell's read
 * fails then, yet fills its variable), -1 at the end with nothing read.
 */
static int read_line(char *line)
{
	size_t used = 0;
	for (;;) {
		char c;
		ssize_t n = read(REPORT_FD, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			line[used] = '\0';
			return used > 0 ? 1 : -1;
		}
		if (c == '\n') {
			line[used] = '\0';
			return 0;
		}
		if (used < MAX_LINE - 1)
			line[used++] = c;
		else
			line[0] = '\n'; /* too long to be any word: matches nothing */
	}
}

/* Whether text at *cursor starts with `prefix`; if so, *cursor moves past it. */
static int take(const char **cursor, const char *prefix)
{
	size_t length = strlen(prefix);
	if (strncmp(*cursor, prefix, length) != 0)
		return 0;
	*cursor += length;
	return 1;
}

/* A word of [a-z] up to `end`, copied into `word`; *cursor moves past both. */
static int take_word(const char **cursor, const char *end, char *word)
{
	size_t length = strspn(*cursor, "abcdefghijklmnopqrstuvwxyz");
	if (length == 0 || length >= MAX_WORD)
		return 0;
	memcpy(word, *cursor, length);
	word[length] = '\0';
	*cursor += length;
	return take(cursor, end);
}

static int is_digits(const char *text, size_t length)
{
	return length > 0 && length <= 20 && strspn(text, "0123456789") >= length;
}

/* REPORT: "<digits> <digits>" or "state <digits>". */
static int is_report(const char *text, size_t length)
{
	const char *space = memchr(text, ' ', length);
	if (space == NULL || memchr(space + 1, ' ', length - (size_t)(space + 1 - text)) != NULL)
		return 0;
	size_t first = (size_t)(space - text), second = length - first - 1;
	return (is_digits(text, first) || (first == 5 && strncmp(text, "state", 5) == 0)) && is_digits(space + 1, second);
}

/* The prerun: -1 when `rest` (after "echo REPORT >&3") is no shape of ours. */
static int prerun(const char *report, const char *rest)
{
	char verdict[MAX_WORD], line[MAX_LINE];
	if (strcmp(rest, "; exit 0") == 0) {
		write_line(report);
		return 0;
	}
	if (!take(&rest, "; read -r verdict <&3; [ \"$verdict\" = ") || !take_word(&rest, " ]", verdict) || *rest != '\0')
		return -1;
	/* A failed echo goes on to the read, which then finds the pipe's end: refused. */
	write_line(report);
	if (read_line(line) < 0)
		return EXITED(1);
	return strcmp(line, verdict) == 0 ? 0 : EXITED(1);
}

/* The postrun: -1 when `rest` (after "echo ended...>&3") is no shape of ours. */
static int postrun(int count, const char *rest)
{
	char counted[MAX_WORD], line[MAX_LINE], ended[64];
	if (!take(&rest, " && while read -r reply <&3; do [ \"$reply\" = ") || !take_word(&rest, " ] && exit 0; done; sleep ", counted))
		return -1;
	size_t digits = strspn(rest, "0123456789");
	if (digits == 0 || digits > 4 || strcmp(rest + digits, "; exit 0") != 0)
		return -1;
	unsigned linger = (unsigned)atoi(rest);

	unsigned long long acked;
	if (count && bytes_acked(0, &acked) == 0)
		snprintf(ended, sizeof ended, "ended %llu\n", acked);
	else
		snprintf(ended, sizeof ended, "ended\n");
	/* As native/socket-sent.c: the client need not wait for the bookkeeping below to see its connection end. */
	if (count)
		shutdown(0, SHUT_WR);
	if (write_line(ended) == 0) {
		while (read_line(line) == 0)
			if (strcmp(line, counted) == 0)
				return 0;
	}
	/* A signal may cut a sleep short; the daemon that adopted this process counts on the whole linger. */
	while (linger > 0)
		linger = sleep(linger);
	return 0;
}

/* What the shell would return for `command`, or -1 when it is no command of ours. */
static int run_ours(const char *command)
{
	const char *cursor = command;
	if (!take(&cursor, head))
		return -1;
	const char *end = strstr(cursor, to_pipe);
	if (end == NULL)
		return -1;
	size_t length = (size_t)(end - cursor);
	const char *rest = end + strlen(to_pipe);

	static const char counter_tail[] = " 2>/dev/null)";
	const size_t tail_length = sizeof counter_tail - 1;
	if (length == 5 && strncmp(cursor, "ended", 5) == 0)
		return postrun(0, rest);
	const char *counter = cursor;
	if (take(&counter, "ended $(") && *counter == '/' && (size_t)(end - counter) > tail_length &&
	    strncmp(end - tail_length, counter_tail, tail_length) == 0)
		return postrun(1, rest);

	char report[64];
	if (!is_report(cursor, length) || length + 2 > sizeof report)
		return -1;
	memcpy(report, cursor, length);
	report[length] = '\n';
	report[length + 1] = '\0';
	return prerun(report, rest);
}

__attribute__((visibility("default"))) int system(const char *command)
{
	if (command != NULL) {
		int status = run_ours(command);
		if (status >= 0)
			return status;
	}
	int (*real_system)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "system");
	if (real_system == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real_system(command);
}
