/*
 * Loaded with LD_PRELOAD into the warm pool's nbd-server processes (src/supervisor/warm-pool.ts).
 *
 * A connection's process otherwise pays for Node's spawn(), exec, dynamic linking and library
 * set-up after its client has connected. A pool process has paid all that ahead of demand: this
 * constructor runs after the loader has linked nbd-server and before its main(), and waits there
 * for one client. nbd-server itself stays unmodified; main() starts as if spawned for that client.
 *
 * The hand-off speaks the little of Node's IPC protocol it needs (JSON lines on the channel whose
 * descriptor Node names in NODE_CHANNEL_FD): nbdmux sends `child.send(msg, socket)`, which writes
 * {"cmd":"NODE_HANDLE",...,"msg":{"nbdmux":"<hex>"}} with the accepted socket attached as
 * SCM_RIGHTS. The hex payload is "<nbdmux pid> <count> (<fd here> <fd in nbdmux> <dev> <ino>)*
 * \n<config path>": each image descriptor nbdmux holds, opened here through /proc/<pid>/fd/<fd>
 * (regular files cannot travel over Node's IPC), placed at the number the config names, and
 * checked to be the very file nbdmux named.
 * Only when everything is in place does this answer {"cmd":"NODE_HANDLE_ACK"} and {"handed":1}:
 * any doubt answers {"failed":"..."} and exits before main(), and nbdmux, which still holds the
 * socket, starts that client the ordinary way.
 *
 * Nothing here runs unless NBDMUX_WARM_POOL is set, and both variables are removed before main(),
 * so the prerun shell and anything else nbd-server starts never wait.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* About 60 bytes of hex per image: room for the 65536 exports nbdmux could ever hold open at once. */
#define MAX_MESSAGE (8 << 20)
#define MAX_IMAGES 65536

static int channel = -1;

static void say(const char *line)
{
	size_t left = strlen(line);
	while (left > 0) {
		ssize_t n = write(channel, line, left);
		if (n <= 0)
			return;
		line += n;
		left -= (size_t)n;
	}
}

static __attribute__((noreturn)) void fail(const char *why)
{
	char line[256];
	snprintf(line, sizeof line, "{\"failed\":\"%s\"}\n", why);
	say(line);
	_exit(70);
}

/* Reads up to the first newline, keeping the one descriptor sent with it; EOF (nbdmux is gone) ends the process. */
static size_t read_line(char *buf, size_t size, int *received)
{
	size_t used = 0;
	for (;;) {
		char control[CMSG_SPACE(sizeof(int) * 4)];
		struct iovec iov = { .iov_base = buf + used, .iov_len = size - 1 - used };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
		ssize_t n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
		if (n == 0)
			_exit(0); /* nbdmux ended or dropped this process: it serves nobody */
		if (n < 0)
			fail("cannot read the hand-off channel");
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int *fds = (int *)CMSG_DATA(c);
			for (size_t i = 0; i < count; i++) {
				if (*received < 0)
					*received = fds[i];
				else
					close(fds[i]);
			}
		}
		used += (size_t)n;
		buf[used] = '\0';
		char *newline = memchr(buf, '\n', used);
		if (newline != NULL) {
			*newline = '\0';
			return (size_t)(newline - buf);
		}
		if (used >= size - 1)
			fail("hand-off message too long");
	}
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The payload between "nbdmux":" and the closing quote, decoded in place. */
static char *payload_of(char *line)
{
	static const char key[] = "\"nbdmux\":\"";
	char *start = strstr(line, key);
	if (start == NULL)
		return NULL;
	start += sizeof key - 1;
	char *out = start;
	for (char *in = start; *in != '"'; in += 2) {
		int high = hex_value(in[0]);
		int low = high < 0 ? -1 : hex_value(in[1]);
		if (low < 0)
			return NULL;
		*out++ = (char)(high * 16 + low);
	}
	*out = '\0';
	return start;
}

static void place_image(long nbdmux_pid, int fd, long source, unsigned long long dev, unsigned long long ino)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%ld/fd/%ld", nbdmux_pid, source);
	/* O_PATH: nbd-server opens /proc/self/fd/<fd> itself, with its own mode; this only pins the file. */
	int opened = open(path, O_PATH);
	if (opened < 0)
		fail("cannot open an image descriptor of nbdmux");
	struct stat st;
	if (fstat(opened, &st) != 0 || (unsigned long long)st.st_dev != dev || (unsigned long long)st.st_ino != ino)
		fail("an image descriptor of nbdmux is not the file it named");
	if (opened != fd) {
		/* Taken by a library's set-up before main(), which a spawned process would have done after its images were placed. */
		if (fcntl(fd, F_GETFD) >= 0)
			fail("an image's descriptor number is already in use");
		if (dup2(opened, fd) < 0)
			fail("cannot place an image descriptor");
		close(opened);
	}
}

struct image {
	long fd, source;
	unsigned long long dev, ino;
};

static void __attribute__((constructor)) wait_for_client(int argc, char **argv, char **envp)
{
	(void)envp;
	const char *pool = getenv("NBDMUX_WARM_POOL");
	const char *channel_var = getenv("NODE_CHANNEL_FD");
	if (pool == NULL || channel_var == NULL)
		return;
	channel = atoi(channel_var);
	unsetenv("NBDMUX_WARM_POOL");
	unsetenv("NODE_CHANNEL_FD");
	unsetenv("NODE_CHANNEL_SERIALIZATION_MODE");
	if (fcntl(channel, F_SETFD, FD_CLOEXEC) != 0)
		_exit(71);

	int config_arg = -1;
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "-C") == 0)
			config_arg = i + 1;
	if (config_arg < 0)
		fail("started without -C");
	say("{\"ready\":1}\n");

	char *line = malloc(MAX_MESSAGE);
	if (line == NULL)
		fail("out of memory");
	int socket_fd = -1;
	for (;;) {
		read_line(line, MAX_MESSAGE, &socket_fd);
		if (strstr(line, "\"cmd\":\"NODE_HANDLE\"") != NULL)
			break;
		/* Anything else nbdmux's side of the protocol may send first carries no descriptor we want. */
		if (socket_fd >= 0) {
			close(socket_fd);
			socket_fd = -1;
		}
	}
	if (socket_fd < 0)
		fail("the hand-off carried no socket");
	char *payload = payload_of(line);
	if (payload == NULL)
		fail("the hand-off carried no nbdmux payload");

	char *cursor = payload;
	long nbdmux_pid = strtol(cursor, &cursor, 10);
	long count = strtol(cursor, &cursor, 10);
	if (nbdmux_pid <= 0 || count < 0 || count > MAX_IMAGES)
		fail("malformed hand-off payload");
	struct image *images = calloc((size_t)count + 1, sizeof *images);
	if (images == NULL)
		fail("out of memory");
	long highest = 3;
	for (long i = 0; i < count; i++) {
		struct image *image = &images[i];
		image->fd = strtol(cursor, &cursor, 10);
		image->source = strtol(cursor, &cursor, 10);
		image->dev = strtoull(cursor, &cursor, 10);
		image->ino = strtoull(cursor, &cursor, 10);
		if (image->fd <= 3 || image->fd > MAX_IMAGES + 3 || image->source < 0)
			fail("an image descriptor number out of range");
		if (image->fd > highest)
			highest = image->fd;
	}
	if (*cursor != '\n' || cursor[1] != '/')
		fail("the hand-off named no absolute config path");
	char *config = strdup(cursor + 1);
	if (config == NULL)
		fail("out of memory");
	free(line);

	/* Both arrived on low numbers (the channel on an image's, where Node put it): clear the images' range first. */
	int moved_channel = fcntl(channel, F_DUPFD_CLOEXEC, (int)highest + 1);
	int moved_socket = fcntl(socket_fd, F_DUPFD_CLOEXEC, (int)highest + 1);
	if (moved_channel < 0 || moved_socket < 0)
		_exit(72);
	close(channel);
	close(socket_fd);
	channel = moved_channel;
	socket_fd = moved_socket;
	for (long i = 0; i < count; i++)
		place_image(nbdmux_pid, (int)images[i].fd, images[i].source, images[i].dev, images[i].ino);
	free(images);

	/*
	 * Node's sockets are non-blocking, and that flag belongs to the socket shared with nbdmux.
	 * nbd-server expects a blocking one (a spawn clears the flag on stdio too): on a non-blocking
	 * socket it spins on EAGAIN and serves a fraction of the bytes per CPU second.
	 */
	int flags = fcntl(socket_fd, F_GETFL);
	if (flags < 0 || fcntl(socket_fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
		fail("cannot make the client socket blocking");
	if (dup2(socket_fd, 0) < 0 || dup2(socket_fd, 1) < 0)
		fail("cannot place the client socket");
	close(socket_fd);
	/*
	 * main() receives this same argv array: it reads the client's own config. Written over the
	 * placeholder when it fits (nbdmux makes the placeholder longer than its config paths), so
	 * that ps and /proc/PID/cmdline name the config this process really serves.
	 */
	size_t room = strlen(argv[config_arg]), length = strlen(config);
	if (length <= room) {
		memset(argv[config_arg], 0, room);
		memcpy(argv[config_arg], config, length);
		free(config);
	} else {
		argv[config_arg] = config;
	}
	say("{\"cmd\":\"NODE_HANDLE_ACK\"}\n{\"handed\":1}\n");
	close(channel);
}
