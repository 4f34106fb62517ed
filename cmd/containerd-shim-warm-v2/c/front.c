/*
 * The front containerd runs for the warm runtime, in C: cmd/containerd-shim-warm-v2
 * (main.go, with internal/shimargs, internal/fastjoin and internal/fastdelete) is the
 * same program in Go, built where no C compiler is, and the reference the tests hold
 * this one to. containerd runs the start action before every container's Create and the
 * delete action after its deletion; a Go binary's start-up alone costs about 1.6 ms of
 * CPU and 2.4 ms of latency here, a static C one 0.2 and 0.6.
 *
 * It answers
 *   - the start action of a container that joins a running shim (a pool hit, a container
 *     of a pod): the bootstrap parameters from stdin, the bundle's annotations, the
 *     group's socket, answered with its address (internal/fastjoin);
 *   - the delete action of a container its shim has cleaned up after: runc's state gone,
 *     no rootfs mounted, a valid exit.json, answered with the DeleteResponse
 *     (internal/fastdelete);
 * and hands everything else to the shim (../libexec/warm/containerd-shim-warm-v2), with
 * the same arguments, environment, directory and standard streams (stdin: what was read
 * of it). It is stricter than the Go front: whatever it is not sure it reads as Go does
 * (a flag form, JSON with escapes, non-ASCII or duplicate keys, protobuf groups, an
 * unclean path) goes to the shim, which answers as it always did.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- small buffers ---- */

struct buf {
	char *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = (b->n + n + 1) * 2;
		char *p = realloc(b->p, cap);
		if (!p)
			abort();
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void put_varint(struct buf *b, uint64_t v)
{
	unsigned char c[10];
	int n = 0;
	while (v >= 0x80) {
		c[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	c[n++] = (unsigned char)v;
	put(b, c, (size_t)n);
}

/* read_file reads up to max bytes of path; -1 with errno on failure or when longer. */
static int read_fd(int fd, struct buf *b, size_t max)
{
	char chunk[65536];
	for (;;) {
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return 0;
		if (b->n + (size_t)r > max) {
			put(b, chunk, max - b->n);
			return 1; /* truncated */
		}
		put(b, chunk, (size_t)r);
	}
}

static int read_file(const char *path, struct buf *b, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = read_fd(fd, b, max);
	int e = errno;
	close(fd);
	errno = e;
	if (r == 1) {
		errno = EFBIG;
		return -1;
	}
	return r;
}

/* ---- the command line: the shim library's flags (internal/shimargs) ---- */

struct args {
	const char *ns, *id, *action;
	int ok;
};

/* parse_args accepts the forms containerd uses; anything else is not ok (the shim
 * parses it with Go's flag package). */
static struct args parse_args(int argc, char **argv)
{
	static const char *value_flags[] = {"namespace", "id", "socket", "debug-socket", "bundle", "address", "publish-binary", NULL};
	struct args a = {"", "", "", 0};
	int i = 1;
	for (; i < argc; i++) {
		const char *s = argv[i];
		if (s[0] != '-' || s[1] == 0)
			break; /* the first argument that is not a flag */
		s++;
		if (s[0] == '-')
			s++;
		if (s[0] == 0 || s[0] == '-' || s[0] == '=')
			return a; /* "--", "---x", "-=x": the flag package's own cases */
		if (strcmp(s, "debug") == 0)
			continue;
		const char *eq = strchr(s, '=');
		size_t len = eq ? (size_t)(eq - s) : strlen(s);
		int known = 0;
		for (int k = 0; value_flags[k]; k++)
			if (strlen(value_flags[k]) == len && strncmp(s, value_flags[k], len) == 0)
				known = 1;
		if (!known)
			return a;
		const char *v;
		if (eq) {
			v = eq + 1;
		} else {
			if (i + 1 >= argc)
				return a;
			v = argv[++i];
		}
		if (len == 9 && strncmp(s, "namespace", 9) == 0)
			a.ns = v;
		else if (len == 2 && strncmp(s, "id", 2) == 0)
			a.id = v;
	}
	if (i < argc)
		a.action = argv[i++];
	if (i < argc)
		return a; /* more than one argument */
	a.ok = 1;
	return a;
}

/* ---- JSON: a strict reader of what encoding/json reads the same way ---- */

struct json {
	const char *p, *end;
	int depth;
};

static void ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* skip_string skips a valid JSON string (at its opening quote); simple is set to 0 if
 * it has an escape or a byte that is not printable ASCII. */
static int skip_string(struct json *j, const char **s, size_t *n, int *simple)
{
	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	const char *start = j->p;
	*simple = 1;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p;
		if (c == '"') {
			*s = start;
			*n = (size_t)(j->p - start);
			j->p++;
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c >= 0x7f)
			*simple = 0;
		if (c == '\\') {
			*simple = 0;
			j->p++;
			if (j->p >= j->end)
				return -1;
			c = (unsigned char)*j->p;
			if (c == 'u') {
				for (int k = 0; k < 4; k++) {
					j->p++;
					if (j->p >= j->end || !strchr("0123456789abcdefABCDEF", *j->p) || *j->p == 0)
						return -1;
				}
			} else if (!strchr("\"\\/bfnrt", c) || c == 0) {
				return -1;
			}
		}
		j->p++;
	}
	return -1;
}

static int digits(struct json *j)
{
	const char *s = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s ? 0 : -1;
}

static int skip_number(struct json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (digits(j))
		return -1;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (digits(j))
			return -1;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (digits(j))
			return -1;
	}
	return 0;
}

static int literal(struct json *j, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

static int skip_value(struct json *j);

static int skip_container(struct json *j, char close)
{
	if (++j->depth > 1000)
		return -1;
	j->p++;
	ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		j->depth--;
		return 0;
	}
	for (;;) {
		ws(j);
		if (close == '}') {
			const char *s;
			size_t n;
			int simple;
			if (skip_string(j, &s, &n, &simple))
				return -1;
			ws(j);
			if (j->p >= j->end || *j->p != ':')
				return -1;
			j->p++;
		}
		if (skip_value(j))
			return -1;
		ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == close) {
			j->p++;
			j->depth--;
			return 0;
		}
		return -1;
	}
}

static int skip_value(struct json *j)
{
	const char *s;
	size_t n;
	int simple;
	ws(j);
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '{':
		return skip_container(j, '}');
	case '[':
		return skip_container(j, ']');
	case '"':
		return skip_string(j, &s, &n, &simple);
	case 't':
		return literal(j, "true");
	case 'f':
		return literal(j, "false");
	case 'n':
		return literal(j, "null");
	default:
		return skip_number(j);
	}
}

/* A JSON object member as read by members(): key and value text. */
struct member {
	const char *key, *val;
	size_t keyn, valn;
	int key_simple;
};

/* members reads the object at j (after whitespace) into m (at most max; -1 if more),
 * checking that every value is valid JSON; it returns the count. */
static int members(struct json *j, struct member *m, int max)
{
	ws(j);
	if (j->p >= j->end || *j->p != '{')
		return -1;
	j->p++;
	ws(j);
	int n = 0;
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		if (n == max)
			return -1;
		ws(j);
		if (skip_string(j, &m[n].key, &m[n].keyn, &m[n].key_simple))
			return -1;
		ws(j);
		if (j->p >= j->end || *j->p != ':')
			return -1;
		j->p++;
		ws(j);
		m[n].val = j->p;
		if (skip_value(j))
			return -1;
		m[n].valn = (size_t)(j->p - m[n].val);
		n++;
		ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			return n;
		}
		return -1;
	}
}

static int key_is(const struct member *m, const char *k)
{
	return m->keyn == strlen(k) && memcmp(m->key, k, m->keyn) == 0;
}

/* key_folds reports whether m's key matches k the way encoding/json matches a struct
 * field's name: ignoring case. Keys that are not simple ASCII are reported as matching
 * (Go folds some other letters to ASCII ones): the caller does not read such a file. */
static int key_folds(const struct member *m, const char *k)
{
	if (!m->key_simple)
		return 1;
	return m->keyn == strlen(k) && strncasecmp(m->key, k, m->keyn) == 0;
}

/* simple_string returns the text of a JSON string value without escapes or non-ASCII. */
static int simple_string(const struct member *m, char *out, size_t cap)
{
	struct json j = {m->val, m->val + m->valn, 0};
	const char *s;
	size_t n;
	int simple;
	if (skip_string(&j, &s, &n, &simple) || !simple || n + 1 > cap)
		return -1;
	memcpy(out, s, n);
	out[n] = 0;
	return 0;
}

static int is_null(const struct member *m)
{
	return m->valn == 4 && memcmp(m->val, "null", 4) == 0;
}

/* whole_object reads data as one JSON object followed by nothing but whitespace. */
static int whole_object(const struct buf *b, struct member *m, int max)
{
	struct json j = {b->p, b->p + b->n, 0};
	int n = members(&j, m, max);
	if (n < 0)
		return -1;
	ws(&j);
	return j.p == j.end ? n : -1;
}

/* ---- SHA-256 ---- */

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
	uint32_t w[64];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256_hex(const char *s, size_t n, char out[65])
{
	uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	unsigned char block[64];
	size_t i = 0;
	for (; i + 64 <= n; i += 64)
		sha256_block(h, (const unsigned char *)s + i);
	size_t rest = n - i;
	memset(block, 0, sizeof block);
	memcpy(block, s + i, rest);
	block[rest] = 0x80;
	if (rest >= 56) {
		sha256_block(h, block);
		memset(block, 0, sizeof block);
	}
	uint64_t bits = (uint64_t)n * 8;
	for (int k = 0; k < 8; k++)
		block[63 - k] = (unsigned char)(bits >> (8 * k));
	sha256_block(h, block);
	for (int k = 0; k < 8; k++)
		snprintf(out + 8 * k, 9, "%08x", h[k]);
}

/* ---- the start action of a joining container (internal/fastjoin) ---- */

struct params {
	const char *id, *ns, *grpc, *socket_dir;
	size_t idn, nsn, grpcn, socket_dirn;
	int has_socket_dir;
};

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		unsigned char c = *(*p)++;
		if (shift == 63 && c > 1)
			return -1;
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return 0;
	}
	return -1;
}

/* parse_params reads BootstrapParams' fields 1, 2, 6 and 9 (strings; the last of each
 * wins) and skips the others; groups are not read (the shim reads them). */
static int parse_params(const struct buf *in, struct params *p)
{
	const unsigned char *s = (const unsigned char *)in->p, *end = s + in->n;
	memset(p, 0, sizeof *p);
	p->id = p->ns = p->grpc = p->socket_dir = "";
	while (s < end) {
		uint64_t tag, v;
		if (get_varint(&s, end, &tag))
			return -1;
		uint64_t num = tag >> 3;
		int typ = (int)(tag & 7);
		if (num == 0 || num > 536870911)
			return -1;
		switch (typ) {
		case 0:
			if (get_varint(&s, end, &v))
				return -1;
			break;
		case 1:
			if (end - s < 8)
				return -1;
			s += 8;
			break;
		case 5:
			if (end - s < 4)
				return -1;
			s += 4;
			break;
		case 2:
			if (get_varint(&s, end, &v) || v > (uint64_t)(end - s))
				return -1;
			if (num == 1)
				p->id = (const char *)s, p->idn = v;
			else if (num == 2)
				p->ns = (const char *)s, p->nsn = v;
			else if (num == 6)
				p->grpc = (const char *)s, p->grpcn = v;
			else if (num == 9)
				p->socket_dir = (const char *)s, p->socket_dirn = v, p->has_socket_dir = v > 0;
			s += v;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

static int eq(const char *a, size_t an, const char *b)
{
	return an == strlen(b) && memcmp(a, b, an) == 0;
}

/* clean_name: a path element that filepath.Join leaves as it is. */
static int clean_name(const char *s)
{
	return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

/* clean_abs: an absolute path that filepath.Clean leaves as it is. */
static int clean_abs(const char *s, size_t n)
{
	if (n == 0 || s[0] != '/')
		return 0;
	if (n == 1)
		return 1;
	if (s[n - 1] == '/')
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == 0)
			return 0;
		if (s[i] != '/')
			continue;
		size_t k = i + 1;
		size_t e = k;
		while (e < n && s[e] != '/')
			e++;
		size_t len = e - k;
		if (len == 0 || (len == 1 && s[k] == '.') || (len == 2 && s[k] == '.' && s[k + 1] == '.'))
			return 0;
	}
	return 1;
}

#define MAX_ANN 4096
#define ANN_GROUP "io.containerd.warm.group"
#define ANN_TEMPLATE "io.containerd.warm.template"

/* relevant: the annotations group.Key and group.Scope read for the key (the others
 * only need to be strings). */
static int relevant(const char *k)
{
	return strcmp(k, ANN_GROUP) == 0 || strcmp(k, ANN_TEMPLATE) == 0 ||
	       strncmp(k, ANN_TEMPLATE "/", strlen(ANN_TEMPLATE) + 1) == 0 ||
	       strcmp(k, "io.kubernetes.cri.container-type") == 0 || strcmp(k, "io.kubernetes.cri.container-name") == 0 ||
	       strcmp(k, "io.kubernetes.cri.sandbox-id") == 0;
}

/* group_key is group.Key(id, group.Scope(annotations)) of the bundle's config.json, in
 * key (cap bytes); -1 when the file is not one this front reads as Go would. */
static int group_key(const char *id, char *key, size_t cap)
{
	static struct buf cfg;
	cfg.n = 0;
	if (read_file("config.json", &cfg, 64 << 20) < 0)
		return -1;
	static struct member top[4096];
	int n = whole_object(&cfg, top, 4096);
	if (n < 0)
		return -1;
	const struct member *ann = NULL;
	for (int i = 0; i < n; i++) {
		if (key_is(&top[i], "annotations")) {
			if (ann)
				return -1; /* twice: Go merges them */
			ann = &top[i];
		} else if (key_folds(&top[i], "annotations")) {
			return -1;
		}
	}
	static struct member m[MAX_ANN];
	enum { MAX_REL = 64 };
	char k[MAX_REL][256], v[MAX_REL][256];
	int na = 0, nr = 0;
	if (ann && !is_null(ann)) {
		struct json j = {ann->val, ann->val + ann->valn, 0};
		na = members(&j, m, MAX_ANN);
		if (na < 0)
			return -1;
		for (int i = 0; i < na; i++) {
			/* A key with an escape or non-ASCII may be one of those read below. */
			if (!m[i].key_simple || m[i].keyn + 1 > sizeof k[0])
				return -1;
			char name[256];
			memcpy(name, m[i].key, m[i].keyn);
			name[m[i].keyn] = 0;
			if (strncmp(name, ANN_GROUP "/", strlen(ANN_GROUP) + 1) == 0)
				return -1; /* a group scoped to a container of a pod: the shim decides */
			if (!relevant(name)) {
				if (m[i].val[0] != '"' && !is_null(&m[i]))
					return -1; /* not a string: Go fails */
				continue;
			}
			if (nr == MAX_REL || simple_string(&m[i], v[nr], sizeof v[nr]))
				return -1; /* null, not a string, or one with escapes */
			for (int x = 0; x < nr; x++)
				if (strcmp(k[x], name) == 0)
					return -1; /* a duplicate key: the last wins in Go */
			strcpy(k[nr++], name);
		}
	}
	const char *kind = "", *cname = "", *grp = "", *tmpl = "", *sandbox = "";
	for (int i = 0; i < nr; i++) {
		if (strcmp(k[i], "io.kubernetes.cri.container-type") == 0)
			kind = v[i];
		else if (strcmp(k[i], "io.kubernetes.cri.container-name") == 0)
			cname = v[i];
		else if (strcmp(k[i], ANN_GROUP) == 0)
			grp = v[i];
		else if (strcmp(k[i], ANN_TEMPLATE) == 0)
			tmpl = v[i];
		else if (strcmp(k[i], "io.kubernetes.cri.sandbox-id") == 0)
			sandbox = v[i];
	}
	/* group.Scope: a CRI sandbox keeps no warm annotation but the group's; a CRI
	 * container takes the template named for it (io.containerd.warm.template/<name>). */
	if (kind[0]) {
		if (strcmp(kind, "sandbox") == 0) {
			tmpl = "";
		} else if (cname[0]) {
			for (int i = 0; i < nr; i++) {
				const char *slash = strchr(k[i], '/');
				if (slash && (size_t)(slash - k[i]) == strlen(ANN_TEMPLATE) &&
				    strncmp(k[i], ANN_TEMPLATE, strlen(ANN_TEMPLATE)) == 0 && strcmp(slash + 1, cname) == 0)
					tmpl = v[i];
			}
		}
	}
	const char *out = id;
	if (grp[0])
		out = grp;
	else if (tmpl[0])
		out = "warm-pool";
	else if (sandbox[0])
		out = sandbox;
	if (strlen(out) + 1 > cap)
		return -1;
	strcpy(key, out);
	return 0;
}

/* dial reports whether a shim accepts connections on the unix socket path (within
 * 100 ms, as the Go front's net.DialTimeout). */
static int dial(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path)
		return 0;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 0;
	int ok = 0;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		ok = 1;
	} else if (errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t len = sizeof err;
		if (poll(&p, 1, 100) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
			ok = 1;
	}
	close(fd);
	return ok;
}

static int answer_start(const struct args *a, const struct buf *in, struct buf *out)
{
	struct params p;
	if (parse_params(in, &p) || !eq(p.id, p.idn, a->id) || !eq(p.ns, p.nsn, a->ns))
		return -1;
	char key[1024];
	if (group_key(a->id, key, sizeof key))
		return -1;
	if (strcmp(key, a->id) == 0)
		return -1; /* a shim of its own: the shim starts it */
	if (!clean_abs(p.grpc, p.grpcn) || !clean_name(a->ns) || !clean_name(key) || memchr(p.socket_dir, 0, p.socket_dirn))
		return -1;
	struct buf joined = {0};
	put(&joined, p.grpc, p.grpcn);
	if (p.grpcn > 1)
		put(&joined, "/", 1);
	put(&joined, a->ns, strlen(a->ns));
	put(&joined, "/", 1);
	put(&joined, key, strlen(key));
	char hex[65];
	sha256_hex(joined.p, joined.n, hex);
	free(joined.p);
	struct buf path = {0};
	if (p.has_socket_dir)
		put(&path, p.socket_dir, p.socket_dirn);
	else
		put(&path, "/run/containerd/s", 17);
	put(&path, "/", 1);
	put(&path, hex, 64);
	if (!dial(path.p))
		return -1; /* none serves the group (or a dead one left its socket) */
	if (p.has_socket_dir) {
		/* As the shim library does first: the bundle's "s" names the socket directory. */
		struct stat st;
		if (lstat("s", &st) == 0 && unlink("s") != 0 && rmdir("s") != 0)
			return -1;
		char dir[PATH_MAX];
		if (p.socket_dirn + 1 > sizeof dir)
			return -1;
		memcpy(dir, p.socket_dir, p.socket_dirn);
		dir[p.socket_dirn] = 0;
		if (symlink(dir, "s") != 0)
			return -1;
	}
	/* BootstrapResult{version: 3, address, protocol: "ttrpc"} */
	struct buf addr = {0};
	put(&addr, "unix://", 7);
	put(&addr, path.p, path.n);
	put(out, "\x08\x03\x12", 3);
	put_varint(out, addr.n);
	put(out, addr.p, addr.n);
	put(out, "\x1a\x05ttrpc", 7);
	free(addr.p);
	free(path.p);
	return 0;
}

/* ---- the delete action after a clean deletion (internal/fastdelete) ---- */

/* runc_root is the runc root of the bundle's options.json, or containerd's default. */
static int runc_root(const char *bundle, char *root, size_t cap)
{
	char path[PATH_MAX + 16];
	if ((size_t)snprintf(path, sizeof path, "%s/options.json", bundle) >= sizeof path)
		return -1;
	struct buf b = {0};
	if (read_file(path, &b, 16 << 20) < 0) {
		if (errno != ENOENT)
			return -1;
		snprintf(root, cap, "/run/containerd/runc");
		return 0;
	}
	struct member m[256];
	int n = whole_object(&b, m, 256);
	int rc = n < 0 ? -1 : 0;
	root[0] = 0;
	for (int i = 0; rc == 0 && i < n; i++) {
		if (key_is(&m[i], "root")) {
			if (!is_null(&m[i]) && simple_string(&m[i], root, cap))
				rc = -1;
		} else if (key_folds(&m[i], "root")) {
			rc = -1;
		}
	}
	free(b.p);
	if (rc == 0 && root[0] == 0)
		snprintf(root, cap, "/run/containerd/runc");
	return rc;
}

/* unmounted: rootfs is missing, or an empty directory that is not a mount's root. */
static int unmounted(const char *rootfs)
{
	struct statx st;
	if (statx(AT_FDCWD, rootfs, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &st) != 0)
		return errno == ENOENT;
	if ((st.stx_mode & S_IFMT) != S_IFDIR || !(st.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) ||
	    (st.stx_attributes & STATX_ATTR_MOUNT_ROOT))
		return 0;
	DIR *d = opendir(rootfs);
	if (!d)
		return 0;
	struct dirent *e;
	int empty = 1;
	errno = 0;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = 0;
			break;
		}
	}
	if (errno)
		empty = 0;
	closedir(d);
	return empty;
}

/* an integer JSON value that fits an int64 (what encoding/json puts in an int). */
static int json_int(const struct member *m, int64_t *v)
{
	const char *s = m->val, *e = m->val + m->valn;
	int neg = 0;
	if (s < e && *s == '-')
		neg = 1, s++;
	if (s == e || (*s == '0' && e - s > 1))
		return -1;
	uint64_t x = 0;
	for (; s < e; s++) {
		if (*s < '0' || *s > '9' || x > (UINT64_MAX - 9) / 10)
			return -1;
		x = x * 10 + (uint64_t)(*s - '0');
	}
	if (x > (uint64_t)INT64_MAX)
		return -1;
	*v = neg ? -(int64_t)x : (int64_t)x;
	return 0;
}

static int num(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* rfc3339 parses YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), the form Go's
 * time.Time marshals to JSON, into Unix seconds and nanoseconds. */
static int rfc3339(const char *s, int64_t *secs, int32_t *nanos)
{
	int y, mo, d, h, mi, se, oh = 0, om = 0;
	size_t n = strlen(s);
	if (n < 20 || num(s, 4, &y) || s[4] != '-' || num(s + 5, 2, &mo) || s[7] != '-' || num(s + 8, 2, &d) ||
	    s[10] != 'T' || num(s + 11, 2, &h) || s[13] != ':' || num(s + 14, 2, &mi) || s[16] != ':' || num(s + 17, 2, &se))
		return -1;
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 || se > 59)
		return -1;
	const char *p = s + 19;
	int32_t ns = 0;
	if (*p == '.') {
		int k = 0;
		p++;
		for (; p[k] >= '0' && p[k] <= '9'; k++) {
			if (k >= 9)
				return -1;
			ns = ns * 10 + (p[k] - '0');
		}
		if (k == 0)
			return -1;
		for (int z = k; z < 9; z++)
			ns *= 10;
		p += k;
	}
	int sign = 0;
	if (strcmp(p, "Z") == 0) {
		sign = 0;
	} else if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 && !num(p + 1, 2, &oh) && p[3] == ':' && !num(p + 4, 2, &om)) {
		if (oh > 23 || om > 59)
			return -1;
		sign = p[0] == '+' ? 1 : -1;
	} else {
		return -1;
	}
	*secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - sign * (oh * 3600 + om * 60);
	*nanos = ns;
	return 0;
}

/* read_exit reads exit.json as containerd's runc.ReadExitStatus does, with its checks:
 * {"Timestamp":..,"Pid":..,"Status":..}, as the runc package writes it. */
static int read_exit(const char *bundle, int64_t *pid, int64_t *status, int64_t *secs, int32_t *nanos)
{
	char path[PATH_MAX + 16];
	if ((size_t)snprintf(path, sizeof path, "%s/exit.json", bundle) >= sizeof path)
		return -1;
	struct buf b = {0};
	if (read_file(path, &b, 1 << 20) < 0)
		return -1;
	struct member m[64];
	/* The Go front decodes the first value only; here nothing may follow it. */
	int n = whole_object(&b, m, 64);
	int rc = n < 0 ? -1 : 0, seen = 0;
	*pid = *status = 0;
	char ts[64] = "";
	for (int i = 0; rc == 0 && i < n; i++) {
		if (key_is(&m[i], "Pid") && !(seen & 1)) {
			seen |= 1;
			rc = json_int(&m[i], pid);
		} else if (key_is(&m[i], "Status") && !(seen & 2)) {
			seen |= 2;
			rc = json_int(&m[i], status);
		} else if (key_is(&m[i], "Timestamp") && !(seen & 4)) {
			seen |= 4;
			rc = simple_string(&m[i], ts, sizeof ts);
		} else if (key_folds(&m[i], "Pid") || key_folds(&m[i], "Status") || key_folds(&m[i], "Timestamp")) {
			rc = -1; /* another case, or a second one: as Go reads it, not here */
		}
	}
	free(b.p);
	if (rc || seen != 7 || rfc3339(ts, secs, nanos))
		return -1;
	/* Go's zero time (0001-01-01T00:00:00Z) is no exit; neither is a pid <= 0. */
	if (*pid <= 0 || *status < 0 || (*secs == -62135596800LL && *nanos == 0))
		return -1;
	return 0;
}

static int answer_delete(const struct args *a, struct buf *out)
{
	if (!a->ns[0] || !clean_name(a->id) || !clean_name(a->ns))
		return -1;
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd) || !clean_abs(cwd, strlen(cwd)))
		return -1;
	/* The bundle, as the shim's Stop finds it: the id beside the working directory. */
	char bundle[PATH_MAX];
	char *slash = strrchr(cwd, '/');
	int bn = slash == cwd ? snprintf(bundle, sizeof bundle, "/%s", a->id)
			      : snprintf(bundle, sizeof bundle, "%.*s/%s", (int)(slash - cwd), cwd, a->id);
	if (bn < 0 || (size_t)bn >= sizeof bundle)
		return -1;
	char root[PATH_MAX];
	if (runc_root(bundle, root, sizeof root) || !clean_abs(root, strlen(root)))
		return -1;
	char state[PATH_MAX * 2];
	if ((size_t)snprintf(state, sizeof state, "%s/%s/%s", strcmp(root, "/") ? root : "", a->ns, a->id) >= sizeof state)
		return -1;
	struct stat st;
	if (lstat(state, &st) == 0 || errno != ENOENT)
		return -1; /* runc's state is there: runc delete has work to do */
	char rootfs[PATH_MAX + 8];
	if ((size_t)snprintf(rootfs, sizeof rootfs, "%s/rootfs", bundle) >= sizeof rootfs)
		return -1;
	if (!unmounted(rootfs))
		return -1;
	int64_t pid, status, secs;
	int32_t nanos;
	if (read_exit(bundle, &pid, &status, &secs, &nanos) || pid > UINT32_MAX || status > UINT32_MAX || secs < 0)
		return -1;
	/* DeleteResponse{pid, exit_status, exited_at} as proto.Marshal writes it. */
	if (pid) {
		put(out, "\x08", 1);
		put_varint(out, (uint64_t)pid);
	}
	if (status) {
		put(out, "\x10", 1);
		put_varint(out, (uint64_t)status);
	}
	struct buf ts = {0};
	if (secs) {
		put(&ts, "\x08", 1);
		put_varint(&ts, (uint64_t)secs);
	}
	if (nanos) {
		put(&ts, "\x10", 1);
		put_varint(&ts, (uint64_t)nanos);
	}
	put(out, "\x1a", 1);
	put_varint(out, ts.n);
	if (ts.n)
		put(out, ts.p, ts.n);
	free(ts.p);
	return 0;
}

/* ---- main ---- */

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("containerd-shim-warm-v2: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n", stderr);
	va_end(ap);
	exit(1);
}

static void write_all(const struct buf *b)
{
	size_t off = 0;
	while (off < b->n) {
		ssize_t w = write(1, b->p + off, b->n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("write the answer: %s", strerror(errno));
		off += (size_t)w;
	}
}

/* replace_stdin makes fd 0 a file that holds data, at offset 0. */
static int replace_stdin(const struct buf *in)
{
	int fd = memfd_create("bootstrap-params", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off < in->n) {
		ssize_t w = write(fd, in->p + off, in->n - off);
		if (w <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct args a = parse_args(argc, argv);
	struct buf in = {0}, out = {0};
	int start = a.ok && strcmp(a.action, "start") == 0 && a.ns[0];
	if (a.ok && strcmp(a.action, "delete") == 0 && answer_delete(&a, &out) == 0) {
		write_all(&out);
		return 0;
	}
	if (start) {
		/* The bootstrap parameters, read as the shim library reads them. */
		if (read_fd(0, &in, 10 << 20) < 0)
			fail("read stdin: %s", strerror(errno));
		if (answer_start(&a, &in, &out) == 0) {
			write_all(&out);
			return 0;
		}
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0)
		fail("%s", strerror(errno));
	self[n] = 0;
	char *slash = strrchr(self, '/');
	*slash = 0;
	char shim[PATH_MAX + 64];
	snprintf(shim, sizeof shim, "%s/../libexec/warm/containerd-shim-warm-v2", self);
	/* The shim reads the parameters from stdin: give it what was read, from the start. */
	if (start && replace_stdin(&in) != 0)
		fail("pass the bootstrap parameters on: %s", strerror(errno));
	extern char **environ;
	execve(shim, argv, environ);
	fail("run the shim %s: %s (it is installed beside this binary's directory, in libexec/warm)", shim, strerror(errno));
	return 1;
}
