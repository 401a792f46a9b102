/*
 * The bytes of a TCP connection its peer acknowledged: what the client received, to the byte,
 * from the kernel's own count. Shared by native/socket-sent.c (the postrun's helper when the
 * postrun runs in a shell) and native/report-hooks.c (the same postrun run in nbd-server).
 */
#ifndef NBDMUX_BYTES_ACKED_H
#define NBDMUX_BYTES_ACKED_H

#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* 0 and the count in *acked; -1 when fd is no TCP socket or the kernel is too old to count (Linux < 4.1). */
static inline int bytes_acked(int fd, unsigned long long *acked)
{
	struct tcp_info info = { 0 };
	socklen_t length = sizeof info;

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0)
		return -1;
	if (length < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
		return -1;
	*acked = info.tcpi_bytes_acked;
	return 0;
}

#endif
