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
 *
 * Then it ends the connection for the client (shutdown, which acts on the socket nbd-server
 * shares, not on this copy): nbd-server has sent its last byte before its postrun, and the client,
 * libnbd's nbd_shutdown for one, waits for the close. It need not also wait for the daemon's
 * bookkeeping that follows, nor for nbd-server's exit.
 *
 * With fast start, native/report-hooks.c does the same inside nbd-server and this program is not run.
 */
#include <stdio.h>
#include <sys/socket.h>
#include "bytes-acked.h"

int main(void)
{
	unsigned long long acked;
	int counted = bytes_acked(0, &acked) == 0;
	if (counted)
		printf("%llu\n", acked);
	/* No socket (ENOTSOCK) or one the client already closed: nothing to end. */
	shutdown(0, SHUT_WR);
	return counted ? 0 : 1;
}
