/*
 * Loaded with LD_PRELOAD into the nbd-server processes nbdmux starts, one per connection.
 *
 * nbd-server 3.24 generates GnuTLS Diffie-Hellman parameters in main() at every start, TLS
 * configured or not: about 3.4 G instructions, 0.1-0.4 s of CPU, most of a connection's
 * set-up time. It then never hands them to GnuTLS (the binary imports no
 * gnutls_*_set_dh_params function), so the work is thrown away. This definition takes
 * precedence over libgnutls's and returns success at once.
 *
 * What skipping could cost: generated parameters only ever serve finite-field DHE cipher
 * suites of TLS 1.2. nbdmux configures no TLS, and src/supervisor/fast-start.ts loads this
 * file only after checking, on the real binary, that it binds here and that nbd-server
 * installs no DH parameters; otherwise nbdmux runs nbd-server unchanged.
 *
 * Declared without <gnutls/gnutls.h> so that building needs only a C compiler: the handle is
 * a pointer and 0 is GNUTLS_E_SUCCESS.
 */
struct gnutls_dh_params_int;

__attribute__((visibility("default")))
int gnutls_dh_params_generate2(struct gnutls_dh_params_int *params, unsigned int bits)
{
	(void)params;
	(void)bits;
	return 0;
}
