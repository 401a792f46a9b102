/*
 * Run by the postrun of each nbd-server process nbdmux starts (src/supervisor/nbd-config.ts),
 * which inherits the client's TCP socket as its standard input (nbd-server in inetd mode serves
 * descriptor 0 and runs postrun while it still holds it). Prints the bytes of that connection the
 * client's TCP acknowledged: what the client received, to the byte, from the kernel's own count.
 * The process's wchar, the other figure at hand, also counts every write to the image or a
 * copy-on-write diff, so a client that writes would look as if it had been sent what it wrote.
 *
 * Prints nothing and exits 1 when standard input is no TCP socket or the kernel is too old to
 * count (Linux < 4.1): the daemon then keeps the wchar it reads from /proc.
 */
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

int main(void)
{
	struct tcp_info info = { 0 };
	socklen_t length = sizeof info;

	if (getsockopt(0, IPPROTO_TCP, TCP_INFO, &info, &length) != 0)
		return 1;
	if (length < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
		return 1;
	printf("%llu\n", (unsigned long long)info.tcpi_bytes_acked);
	return 0;
}
