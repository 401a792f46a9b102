/*
 * nbd-attach: attaches an NBD export to /dev/nbdINDEX and keeps it attached.
 *
 *   nbd-attach HOST PORT EXPORT INDEX DEAD_SECONDS
 *
 * With DEAD_SECONDS 0 it attaches and exits, as nbd-client does: for an export whose bytes may
 * change under the name (nothing guarantees a reconnect the same version).
 *
 * nbd-client 3.24 in netlink mode hands its socket to the kernel and exits, and sets no
 * dead-connection timeout: once the serving process dies, reads hang or fail and nothing can
 * dial again. This attaches with the kernel's dead-connection timeout and a request timeout, then
 * stays, as a process systemd spares at shutdown ('@' in argv[0][0]), listening for the kernel's
 * "link dead" message. On it, it dials the same export again, checks that the server still offers
 * the size and flags it attached, and gives the kernel the new socket; the kernel holds the I/O
 * meanwhile (for up to DEAD_SECONDS) and resends what was in flight.
 *
 * When it gives up (the server stayed away past DEAD_SECONDS, or offers other bytes), it says so
 * and runs the initramfs's report-lost hook, which tells nbdmux the boot failed.
 *
 * Every byte from the server is hostile: option replies are bounded, strings are printed only
 * after every byte that is not printable ASCII is replaced. Messages go to stderr and, once in
 * the background, to the kernel log, where dmesg and the console show them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NBD_FLAG_FIXED_NEWSTYLE (1 << 0)
#define NBD_FLAG_NO_ZEROES (1 << 1)
#define NBD_OPT_GO 7
#define NBD_REP_ACK 1
#define NBD_REP_INFO 3
#define NBD_REP_FLAG_ERROR (1u << 31)
#define NBD_INFO_EXPORT 0
static const uint64_t nbd_magic = 0x4e42444d41474943ull;  /* "NBDMAGIC" */
static const uint64_t opt_magic = 0x49484156454f5054ull;  /* "IHAVEOPT" */
static const uint64_t reply_magic = 0x3e889045565a9ull;

/* Seconds a request may take before the kernel counts the connection dead and requeues it: what
 * notices a server host that vanished without closing the connection, and what bounds the wait of
 * the requests that were in flight when a connection died (the kernel resends them only then). A
 * request that takes longer only costs a reconnect. */
#define REQUEST_TIMEOUT_SECONDS 10
/* Seconds the handshake may take: a server that accepts and never answers is not a server. */
#define HANDSHAKE_TIMEOUT_SECONDS 10
/* An option reply longer than this is no reply nbd-server sends. */
#define MAX_REPLY_BYTES 4096

struct target {
	const char *host, *port, *name;
	uint32_t index;
	uint64_t dead_seconds;
	uint64_t size;
	uint16_t flags;
};

static bool in_background;
static int kmsg = -1;

static void say(const char *format, ...) {
	char line[512];
	va_list args;
	va_start(args, format);
	int length = vsnprintf(line, sizeof line, format, args);
	va_end(args);
	if (length < 0) return;
	if ((size_t)length >= sizeof line) length = sizeof line - 1;
	if (in_background && kmsg >= 0) {
		char record[sizeof line + 32];
		int n = snprintf(record, sizeof record, "<6>nbd-attach: %s", line);
		if (n > 0) (void)!write(kmsg, record, (size_t)n < sizeof record ? (size_t)n : sizeof record - 1);
	} else {
		fprintf(stderr, "nbd-attach: %s\n", line);
	}
}

/* Text from the server, made safe to print: printable ASCII only, bounded. */
static void printable(const unsigned char *bytes, size_t length, char *out, size_t out_size) {
	size_t n = 0;
	for (size_t i = 0; i < length && n + 1 < out_size; i++) out[n++] = bytes[i] >= 0x20 && bytes[i] < 0x7f ? (char)bytes[i] : '?';
	out[n] = '\0';
}

static bool read_all(int fd, void *buffer, size_t length) {
	unsigned char *at = buffer;
	while (length > 0) {
		ssize_t n = read(fd, at, length);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) return false;
		at += n;
		length -= (size_t)n;
	}
	return true;
}

static bool write_all(int fd, const void *buffer, size_t length) {
	const unsigned char *at = buffer;
	while (length > 0) {
		ssize_t n = write(fd, at, length);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) return false;
		at += n;
		length -= (size_t)n;
	}
	return true;
}

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Dials HOST:PORT (numeric: the initramfs resolves no names) and negotiates EXPORT with NBD_OPT_GO.
 * Returns the connected socket, its size and flags in *size and *flags; or -1 with `why` filled. */
static int dial(const struct target *t, uint64_t *size, uint16_t *flags, char *why, size_t why_size) {
	/* Numeric only, parsed here: a static binary must not reach for glibc's name service modules. */
	struct sockaddr_storage address = {0};
	socklen_t address_length;
	struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
	char *port_end;
	unsigned long port = strtoul(t->port, &port_end, 10);
	if (*t->port == '\0' || *port_end || port == 0 || port > 65535) {
		snprintf(why, why_size, "%s is not a port number", t->port);
		return -1;
	}
	if (inet_pton(AF_INET, t->host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		address_length = sizeof *v4;
	} else if (inet_pton(AF_INET6, t->host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		address_length = sizeof *v6;
	} else {
		snprintf(why, why_size, "%s is not a numeric IPv4 or IPv6 address", t->host);
		return -1;
	}
	int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, why_size, "socket: %s", strerror(errno));
		return -1;
	}
	struct timeval handshake = {.tv_sec = HANDSHAKE_TIMEOUT_SECONDS};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &handshake, sizeof handshake);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &handshake, sizeof handshake);
	int on = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	if (connect(fd, (struct sockaddr *)&address, address_length) < 0) {
		snprintf(why, why_size, "cannot connect to %s:%s: %s", t->host, t->port, strerror(errno));
		close(fd);
		return -1;
	}

	struct __attribute__((packed)) {
		uint64_t magic, option_magic;
		uint16_t flags;
	} greeting;
	if (!read_all(fd, &greeting, sizeof greeting)) {
		snprintf(why, why_size, "%s:%s closed the connection or said nothing within %ds", t->host, t->port, HANDSHAKE_TIMEOUT_SECONDS);
		goto fail;
	}
	uint16_t server_flags = be16toh(greeting.flags);
	if (be64toh(greeting.magic) != nbd_magic || be64toh(greeting.option_magic) != opt_magic || !(server_flags & NBD_FLAG_FIXED_NEWSTYLE)) {
		snprintf(why, why_size, "%s:%s does not speak fixed-newstyle NBD", t->host, t->port);
		goto fail;
	}
	uint32_t client_flags = htobe32(NBD_FLAG_FIXED_NEWSTYLE | (server_flags & NBD_FLAG_NO_ZEROES));
	size_t name_length = strlen(t->name);
	struct __attribute__((packed)) {
		uint32_t client_flags;
		uint64_t magic;
		uint32_t option, length, name_length;
	} go = {client_flags, htobe64(opt_magic), htobe32(NBD_OPT_GO), htobe32((uint32_t)(4 + name_length + 2)), htobe32((uint32_t)name_length)};
	uint16_t no_info_requests = 0;
	if (!write_all(fd, &go, sizeof go) || !write_all(fd, t->name, name_length) || !write_all(fd, &no_info_requests, 2)) {
		snprintf(why, why_size, "%s:%s closed the connection during the handshake", t->host, t->port);
		goto fail;
	}
	bool have_export = false;
	for (;;) {
		struct __attribute__((packed)) {
			uint64_t magic;
			uint32_t option, type, length;
		} reply;
		unsigned char data[MAX_REPLY_BYTES];
		if (!read_all(fd, &reply, sizeof reply)) {
			snprintf(why, why_size, "%s:%s closed the connection during the handshake", t->host, t->port);
			goto fail;
		}
		uint32_t type = be32toh(reply.type), length = be32toh(reply.length);
		if (be64toh(reply.magic) != reply_magic || be32toh(reply.option) != NBD_OPT_GO || length > MAX_REPLY_BYTES) {
			snprintf(why, why_size, "%s:%s sent a malformed option reply", t->host, t->port);
			goto fail;
		}
		if (!read_all(fd, data, length)) {
			snprintf(why, why_size, "%s:%s closed the connection during the handshake", t->host, t->port);
			goto fail;
		}
		if (type & NBD_REP_FLAG_ERROR) {
			char message[256];
			printable(data, length, message, sizeof message);
			snprintf(why, why_size, "the server refused export %s: %s", t->name, length ? message : "no reason given");
			goto fail;
		}
		if (type == NBD_REP_INFO && length >= 12 && be16toh(*(uint16_t *)data) == NBD_INFO_EXPORT) {
			uint64_t size_be;
			uint16_t flags_be;
			memcpy(&size_be, data + 2, 8);
			memcpy(&flags_be, data + 10, 2);
			*size = be64toh(size_be);
			*flags = be16toh(flags_be);
			have_export = true;
		} else if (type == NBD_REP_ACK) {
			if (have_export) break;
			snprintf(why, why_size, "%s:%s ended the handshake without the export's size", t->host, t->port);
			goto fail;
		}
	}
	/* The kernel owns the socket from here; its own timeouts apply, not the handshake's. */
	struct timeval none = {0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
	return fd;
fail:
	close(fd);
	return -1;
}

/* --- generic netlink, without libnl ---------------------------------------------------------- */

struct message {
	union {
		struct nlmsghdr header;
		unsigned char bytes[8192];
	};
};

static struct nlattr *put(struct message *m, uint16_t type, const void *data, size_t length) {
	struct nlattr *attr = (struct nlattr *)(m->bytes + NLMSG_ALIGN(m->header.nlmsg_len));
	attr->nla_type = type;
	attr->nla_len = (uint16_t)(NLA_HDRLEN + length);
	if (length) memcpy((unsigned char *)attr + NLA_HDRLEN, data, length);
	m->header.nlmsg_len = NLMSG_ALIGN(m->header.nlmsg_len) + NLA_ALIGN(attr->nla_len);
	return attr;
}

static void put_u32(struct message *m, uint16_t type, uint32_t value) { put(m, type, &value, 4); }
static void put_u64(struct message *m, uint16_t type, uint64_t value) { put(m, type, &value, 8); }
static void end_nest(struct message *m, struct nlattr *nest) {
	nest->nla_len = (uint16_t)(m->bytes + m->header.nlmsg_len - (unsigned char *)nest);
}

static void start(struct message *m, uint16_t family, uint8_t command, uint16_t flags) {
	memset(m, 0, sizeof(struct nlmsghdr) + GENL_HDRLEN);
	m->header.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	m->header.nlmsg_type = family;
	m->header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	static uint32_t sequence;
	m->header.nlmsg_seq = ++sequence;
	struct genlmsghdr *genl = NLMSG_DATA(&m->header);
	genl->cmd = command;
	genl->version = NBD_GENL_VERSION;
}

/* Sends `m` and reads until the kernel's acknowledgement; a reply of the request's own family goes
 * to `on_reply`. Returns 0 or a negative errno. */
static int transact(int fd, struct message *m, void (*on_reply)(struct nlmsghdr *, void *), void *context) {
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	if (sendto(fd, m, m->header.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -errno;
	uint32_t sequence = m->header.nlmsg_seq;
	static unsigned char answer[16384];
	for (;;) {
		ssize_t n = recv(fd, answer, sizeof answer, 0);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)answer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != sequence) continue;
			if (h->nlmsg_type == NLMSG_ERROR) return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
			if (on_reply) on_reply(h, context);
		}
	}
}

struct family {
	uint16_t id;
	uint32_t group;
};

static void read_family(struct nlmsghdr *h, void *context) {
	struct family *family = context;
	int remaining = (int)h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	for (struct nlattr *a = (struct nlattr *)((unsigned char *)NLMSG_DATA(h) + GENL_HDRLEN); remaining >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= remaining;
	     remaining -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((unsigned char *)a + NLA_ALIGN(a->nla_len))) {
		unsigned char *value = (unsigned char *)a + NLA_HDRLEN;
		if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID) memcpy(&family->id, value, 2);
		if ((a->nla_type & NLA_TYPE_MASK) != CTRL_ATTR_MCAST_GROUPS) continue;
		int groups_left = a->nla_len - NLA_HDRLEN;
		for (struct nlattr *g = (struct nlattr *)value; groups_left >= NLA_HDRLEN && g->nla_len >= NLA_HDRLEN && g->nla_len <= groups_left;
		     groups_left -= NLA_ALIGN(g->nla_len), g = (struct nlattr *)((unsigned char *)g + NLA_ALIGN(g->nla_len))) {
			uint32_t id = 0;
			bool ours = false;
			int left = g->nla_len - NLA_HDRLEN;
			for (struct nlattr *f = (struct nlattr *)((unsigned char *)g + NLA_HDRLEN); left >= NLA_HDRLEN && f->nla_len >= NLA_HDRLEN && f->nla_len <= left;
			     left -= NLA_ALIGN(f->nla_len), f = (struct nlattr *)((unsigned char *)f + NLA_ALIGN(f->nla_len))) {
				const char *text = (const char *)f + NLA_HDRLEN;
				if (f->nla_type == CTRL_ATTR_MCAST_GRP_ID) memcpy(&id, text, 4);
				if (f->nla_type == CTRL_ATTR_MCAST_GRP_NAME)
					ours = strncmp(text, NBD_GENL_MCAST_GROUP_NAME, f->nla_len - NLA_HDRLEN) == 0;
			}
			if (ours) family->group = id;
		}
	}
}

static int resolve_family(int fd, struct family *family) {
	struct message m;
	start(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0);
	((struct genlmsghdr *)NLMSG_DATA(&m.header))->version = 1;
	put(&m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof NBD_GENL_FAMILY_NAME);
	*family = (struct family){0};
	int error = transact(fd, &m, read_family, family);
	if (error == 0 && (family->id == 0 || family->group == 0)) error = -ENOENT;
	return error;
}

/* NBD_CMD_CONNECT or NBD_CMD_RECONFIGURE of /dev/nbdINDEX with the socket `sock`. */
static int configure(int fd, const struct family *family, const struct target *t, uint8_t command, int sock) {
	struct message m;
	start(&m, family->id, command, 0);
	put_u32(&m, NBD_ATTR_INDEX, t->index);
	if (command == NBD_CMD_CONNECT) {
		put_u64(&m, NBD_ATTR_SIZE_BYTES, t->size);
		put_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, 512);
		put_u64(&m, NBD_ATTR_SERVER_FLAGS, t->flags);
		if (t->dead_seconds > 0) {
			put_u64(&m, NBD_ATTR_TIMEOUT, REQUEST_TIMEOUT_SECONDS);
			put_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, t->dead_seconds);
		}
	}
	struct nlattr *sockets = put(&m, NBD_ATTR_SOCKETS | NLA_F_NESTED, NULL, 0);
	struct nlattr *item = put(&m, NBD_SOCK_ITEM | NLA_F_NESTED, NULL, 0);
	put_u32(&m, NBD_SOCK_FD, (uint32_t)sock);
	end_nest(&m, item);
	end_nest(&m, sockets);
	return transact(fd, &m, NULL, NULL);
}

/* The index of the device a "link dead" message names, or -1. */
static long dead_index(struct nlmsghdr *h, uint16_t family) {
	if (h->nlmsg_type != family || h->nlmsg_len < NLMSG_LENGTH(GENL_HDRLEN)) return -1;
	struct genlmsghdr *genl = NLMSG_DATA(h);
	if (genl->cmd != NBD_CMD_LINK_DEAD) return -1;
	int remaining = (int)h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	for (struct nlattr *a = (struct nlattr *)((unsigned char *)genl + GENL_HDRLEN); remaining >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= remaining;
	     remaining -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((unsigned char *)a + NLA_ALIGN(a->nla_len))) {
		if ((a->nla_type & NLA_TYPE_MASK) == NBD_ATTR_INDEX && a->nla_len >= NLA_HDRLEN + 4) {
			uint32_t index;
			memcpy(&index, (unsigned char *)a + NLA_HDRLEN, 4);
			return index;
		}
	}
	return -1;
}

/* Tells nbdmux that this boot failed and why, through the hook the initramfs leaves in /run/ramboot
 * when the boot reports (report-lost, which retries while the server is away). Run in a child
 * rooted at PID 1's root: after switch_root that is the booted system, where /run now is. This
 * process still sits in the initramfs, whose /proc was moved away too: `proc` is a descriptor of
 * /proc opened before that. No hook, no report. */
static int proc = -1;
static void report_lost(const char *reason) {
	if (fork() != 0) return; /* SIGCHLD is ignored: the child is reaped without a wait */
	int root = openat(proc, "1/root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || fchdir(root) != 0 || chroot(".") != 0) {
		say("cannot report the failure to nbdmux: no root of PID 1: %s", strerror(errno));
		_exit(1);
	}
	if (access("/run/ramboot/report-lost", R_OK) != 0) _exit(0);
	if (kmsg >= 0) {
		dup2(kmsg, 1);
		dup2(kmsg, 2);
	}
	execl("/run/ramboot/busybox", "busybox", "sh", "/run/ramboot/report-lost", reason, (char *)NULL);
	say("cannot report the failure to nbdmux: %s", strerror(errno));
	_exit(1);
}

/* Dials until the export answers as it did at attach, for at most the dead-connection timeout. */
static void reconnect(int control, const struct family *family, const struct target *t) {
	double lost = now(), pause = 0.2;
	char why[512] = "";
	while (now() - lost < (double)t->dead_seconds) {
		uint64_t size;
		uint16_t flags;
		int sock = dial(t, &size, &flags, why, sizeof why);
		if (sock >= 0 && (size != t->size || flags != t->flags)) {
			/* A root filesystem switched under a running kernel is corruption: never hand it over. */
			snprintf(why, sizeof why, "%s now has size %llu flags 0x%x, not the %llu and 0x%x it was attached with", t->name, (unsigned long long)size, flags,
			         (unsigned long long)t->size, t->flags);
			close(sock);
			sock = -1;
		}
		if (sock >= 0) {
			int error = configure(control, family, t, NBD_CMD_RECONFIGURE, sock);
			close(sock);
			/* No dead socket to replace: a second "link dead" message for an outage already mended. */
			if (error == -ENOSPC) return;
			if (error == 0) {
				say("nbd%u: reconnected to %s at %s:%s after %.1fs", t->index, t->name, t->host, t->port, now() - lost);
				return;
			}
			snprintf(why, sizeof why, "the kernel refused the new connection: %s", strerror(-error));
		}
		struct timespec wait = {.tv_sec = (time_t)pause, .tv_nsec = (long)((pause - (double)(time_t)pause) * 1e9)};
		nanosleep(&wait, NULL);
		if (pause < 2) pause *= 2;
	}
	char gave_up[1024];
	snprintf(gave_up, sizeof gave_up, "nbd%u: gave up reconnecting to %s at %s:%s after %llus: %s", t->index, t->name, t->host, t->port,
	         (unsigned long long)t->dead_seconds, why);
	say("%s", gave_up);
	report_lost(gave_up);
}

int main(int argc, char **argv) {
	if (argc != 6) {
		fprintf(stderr, "usage: nbd-attach HOST PORT EXPORT INDEX DEAD_SECONDS\n");
		return 2;
	}
	char *index_end, *dead_end;
	struct target t = {.host = argv[1], .port = argv[2], .name = argv[3]};
	unsigned long index = strtoul(argv[4], &index_end, 10);
	unsigned long dead = strtoul(argv[5], &dead_end, 10);
	if (*index_end || *dead_end || index > 255 || dead > 86400 || strlen(t.name) > 4096) {
		fprintf(stderr, "nbd-attach: INDEX is 0-255, DEAD_SECONDS 0-86400, EXPORT at most 4096 bytes\n");
		return 2;
	}
	t.index = (uint32_t)index;
	t.dead_seconds = dead;

	char why[512];
	int sock = dial(&t, &t.size, &t.flags, why, sizeof why);
	if (sock < 0) {
		say("%s", why);
		return 1;
	}
	int control = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	struct family family;
	int error = control < 0 ? -errno : resolve_family(control, &family);
	if (error == 0) error = configure(control, &family, &t, NBD_CMD_CONNECT, sock);
	close(sock);
	if (error != 0) {
		say("cannot attach %s to /dev/nbd%u: %s (is the nbd module loaded, the device free?)", t.name, t.index, strerror(-error));
		return 1;
	}
	if (t.dead_seconds == 0) return 0;
	/* The link-dead messages go to a socket of their own, so that no reply is mistaken for one. */
	int events = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	struct sockaddr_nl bound = {.nl_family = AF_NETLINK};
	if (events < 0 || bind(events, (struct sockaddr *)&bound, sizeof bound) < 0 ||
	    setsockopt(events, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &family.group, sizeof family.group) < 0) {
		say("attached %s, but cannot listen for a dead connection: %s; it will not reconnect", t.name, strerror(errno));
		return 0;
	}

	pid_t child = fork();
	if (child < 0) {
		say("attached %s, but cannot stay to reconnect: %s", t.name, strerror(errno));
		return 0;
	}
	if (child > 0) return 0;
	setsid();
	signal(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_IGN);
	/* systemd's last killing spree at shutdown spares a process whose argv[0] starts with '@': the
	 * root device depends on this one until the very end. */
	argv[0][0] = '@';
	kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	proc = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
	in_background = true;
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2) close(null);
	}
	/* The initramfs this was started from is deleted by switch_root: hold no directory of it. */
	if (chdir("/") != 0) return 1;

	static unsigned char buffer[16384];
	for (;;) {
		ssize_t n = recv(events, buffer, sizeof buffer, 0);
		if (n < 0 && (errno == EINTR || errno == ENOBUFS)) continue;
		if (n < 0) {
			say("nbd%u: stopped listening for dead connections: %s", t.index, strerror(errno));
			return 1;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (dead_index(h, family.id) == (long)t.index) {
				say("nbd%u: the connection to %s at %s:%s died; reconnecting for up to %llus", t.index, t.name, t.host, t.port, (unsigned long long)t.dead_seconds);
				reconnect(control, &family, &t);
			}
		}
	}
}
