/*
 * Built into the same preloaded library as native/report-hooks.c (scripts/build-native.mjs).
 *
 * nbd-server reads every option of every section of its config with GLib's g_key_file_get_*()
 * and takes G_KEY_FILE_ERROR_KEY_NOT_FOUND for "unset, use the default". nbdmux's sections set
 * 3-5 of the 20-odd options, and GLib builds each not-found error with a translated, formatted
 * message (gettext and printf) that nbd-server then throws away: with 1000 exports that was 62%
 * of a start's instructions (callgrind, docs/performance.md). Here an absent key answers the same
 * error code with a fixed message, without building one; a key that is present, and every other
 * case (a missing group, a value that does not parse), goes to GLib's own function unchanged.
 *
 * Declared without GLib's headers so that building needs only a C compiler, and GLib's functions
 * are found at the first call (dlsym), not linked: a process without GLib that inherits the
 * preload (a shell nbd-server starts, a wrapper script) loads this file with nothing unresolved,
 * even with LD_BIND_NOW.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _GKeyFile GKeyFile;
typedef uint32_t GQuark;
typedef struct {
	GQuark domain;
	int code;
	char *message;
} GError;

static struct {
	int (*has_key)(GKeyFile *key_file, const char *group, const char *key, GError **error);
	GQuark (*error_quark)(void);
	GError *(*error_new_literal)(GQuark domain, int code, const char *message);
	void (*error_free)(GError *error);
} glib;

/* Whether GLib's functions are at hand; they are in any process whose getters reach this file. */
static int glib_found(void)
{
	if (glib.error_free == NULL) {
		glib.has_key = (int (*)(GKeyFile *, const char *, const char *, GError **))dlsym(RTLD_DEFAULT, "g_key_file_has_key");
		glib.error_quark = (GQuark(*)(void))dlsym(RTLD_DEFAULT, "g_key_file_error_quark");
		glib.error_new_literal = (GError * (*)(GQuark, int, const char *)) dlsym(RTLD_DEFAULT, "g_error_new_literal");
		glib.error_free = (void (*)(GError *))dlsym(RTLD_DEFAULT, "g_error_free");
	}
	return glib.has_key != NULL && glib.error_quark != NULL && glib.error_new_literal != NULL && glib.error_free != NULL;
}

/* GKeyFileError: UNKNOWN_ENCODING, PARSE, NOT_FOUND, KEY_NOT_FOUND, ... (stable since GLib 2.6). */
#define G_KEY_FILE_ERROR_KEY_NOT_FOUND 3

/* Whether `key` is absent from an existing `group`; if so, *error says so as GLib would, by its code. */
static int absent(GKeyFile *key_file, const char *group, const char *key, GError **error)
{
	if (!glib_found())
		return 0;
	GError *lookup = NULL;
	if (glib.has_key(key_file, group, key, &lookup))
		return 0;
	if (lookup != NULL) {
		/* No such group: GLib's own function reports that. */
		glib.error_free(lookup);
		return 0;
	}
	if (error != NULL)
		*error = glib.error_new_literal(glib.error_quark(), G_KEY_FILE_ERROR_KEY_NOT_FOUND, "Key file does not have this key");
	return 1;
}

#define ABSENT_KEY_HOOK(type, name, unset)                                                               \
	__attribute__((visibility("default"))) type name(GKeyFile *key_file, const char *group, const char *key, GError **error) \
	{                                                                                                \
		static type (*real)(GKeyFile *, const char *, const char *, GError **);                  \
		if (absent(key_file, group, key, error))                                                  \
			return unset;                                                                    \
		if (real == NULL)                                                                        \
			real = (type(*)(GKeyFile *, const char *, const char *, GError **))dlsym(RTLD_NEXT, #name); \
		return real(key_file, group, key, error);                                                \
	}

/* The four getters nbd-server 3.24 imports (objdump -T /usr/bin/nbd-server), each answering what GLib answers for an absent key. */
ABSENT_KEY_HOOK(char *, g_key_file_get_string, NULL)
ABSENT_KEY_HOOK(int, g_key_file_get_boolean, 0)
ABSENT_KEY_HOOK(int, g_key_file_get_integer, 0)
ABSENT_KEY_HOOK(int64_t, g_key_file_get_int64, 0)
