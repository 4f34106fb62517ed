/*
 * warm-runc: the runc of containers that warm serves from a pool. It runs twice on
 * every pool hit (runc create, runc start), so it is C: it starts in a fraction of the
 * time a Go binary needs. It speaks the protocol of package oci/wrap (see wrap.go):
 *
 *   - create, start, kill and delete of a container id are first offered to the shim
 *     over the unix socket $WARM_ADOPT_SOCKET: one JSON request
 *     {"op":..,"id":..,"pid_file":..}, with stdin, stdout and stderr attached
 *     (SCM_RIGHTS) for create; the shim answers {"handled":true} (done),
 *     {"handled":false} (not its container) or {"error":".."}.
 *   - everything else, and whatever the shim does not handle, is exec'd as the real
 *     runc, $WARM_RUNC, with the same arguments.
 *
 * Errors go where go-runc looks for runc's: stderr and the --log file (JSON lines).
 * cmd/warm-runc/main.go is the same program in Go, built where no C compiler is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *log_path(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--log") == 0)
			return argv[i + 1];
		if (strcmp(a, "--root") == 0 || strcmp(a, "--log-format") == 0 || strcmp(a, "--criu") == 0)
			i++;
		else if (a[0] != '-')
			return NULL;
	}
	return NULL;
}

/* json_escape appends s to out (capacity cap) as the inside of a JSON string. */
static size_t json_escape(char *out, size_t n, size_t cap, const char *s)
{
	for (; *s && n + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = 0;
	return n;
}

/* add appends s to out (capacity cap, n bytes used) and returns the new length, or cap
 * if it does not fit (out is then left as it was). */
static size_t add(char *out, size_t n, size_t cap, const char *s)
{
	size_t l = strlen(s);
	if (n >= cap || l >= cap - n)
		return cap;
	memcpy(out + n, s, l + 1);
	return n + l;
}

/* add_field appends ,"name":"value" (value escaped) to out, or returns cap if it does
 * not fit. */
static size_t add_field(char *out, size_t n, size_t cap, const char *name, const char *value)
{
	char buf[8];
	n = add(out, n, cap, ",\"");
	n = add(out, n, cap, name);
	n = add(out, n, cap, "\":\"");
	for (const unsigned char *p = (const unsigned char *)value; *p && n < cap; p++) {
		if (*p == '"' || *p == '\\')
			snprintf(buf, sizeof(buf), "\\%c", *p);
		else if (*p < 0x20)
			snprintf(buf, sizeof(buf), "\\u%04x", *p);
		else
			snprintf(buf, sizeof(buf), "%c", *p);
		n = add(out, n, cap, buf);
	}
	return add(out, n, cap, "\"");
}

static int fail(int argc, char **argv, const char *fmt, ...)
{
	char msg[4096], line[8192], ts[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", msg);
	const char *p = log_path(argc, argv);
	if (p) {
		struct timespec now;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		size_t n = (size_t)snprintf(line, sizeof(line), "{\"level\":\"error\",\"msg\":\"");
		n = json_escape(line, n, sizeof(line) - 64, msg);
		snprintf(line + n, sizeof(line) - n, "\",\"time\":\"%s\"}\n", ts);
		FILE *f = fopen(p, "a");
		if (f) {
			fputs(line, f);
			fclose(f);
		}
	}
	return 1;
}

/* ask sends the request and reads the reply into buf (NUL-terminated). */
static int ask(const char *sock, const char *req, int with_stdio, char *buf, size_t cap)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		goto err;
	struct iovec iov = {.iov_base = (void *)req, .iov_len = strlen(req)};
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (with_stdio) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(3 * sizeof(int));
		int fds[3] = {0, 1, 2};
		memcpy(CMSG_DATA(c), fds, sizeof(fds));
	}
	if (sendmsg(fd, &msg, 0) != (ssize_t)iov.iov_len)
		goto err;
	if (shutdown(fd, SHUT_WR) < 0)
		goto err;
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto err;
		if (r == 0 || n + (size_t)r >= cap - 1) {
			n += (size_t)(r > 0 ? r : 0);
			break;
		}
		n += (size_t)r;
	}
	buf[n] = 0;
	close(fd);
	return 0;
err:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

/* reply_error copies the reply's "error" string (JSON escapes kept as they are). */
static int reply_error(const char *reply, char *out, size_t cap)
{
	const char *p = strstr(reply, "\"error\":\"");
	if (!p)
		return 0;
	p += 9;
	size_t n = 0;
	for (; *p && n + 1 < cap; p++) {
		if (*p == '\\' && p[1]) {
			out[n++] = *++p;
			continue;
		}
		if (*p == '"')
			break;
		out[n++] = *p;
	}
	out[n] = 0;
	return 1;
}

int main(int argc, char **argv)
{
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			break;
		if (strcmp(a, "--root") == 0 || strcmp(a, "--log") == 0 || strcmp(a, "--log-format") == 0 ||
		    strcmp(a, "--criu") == 0)
			i++;
	}
	const char *sub = i < argc ? argv[i] : NULL;
	const char *id = NULL, *pid_file = "", *sig = "";
	if (sub) {
		for (int j = i + 1; j < argc; j++) {
			if (strcmp(argv[j], "--pid-file") == 0 && j + 1 < argc)
				pid_file = argv[j + 1];
			else if (strncmp(argv[j], "--pid-file=", 11) == 0)
				pid_file = argv[j] + 11;
		}
		if (strcmp(sub, "kill") == 0) {
			/* kill [--all|-a] ID [SIGNAL]: the id is the first argument that is not a
			 * flag, the signal the next one */
			for (int j = i + 1; j < argc; j++) {
				if (argv[j][0] == '-')
					continue;
				else if (!id)
					id = argv[j];
				else if (!*sig)
					sig = argv[j];
			}
		} else if (i + 1 < argc)
			id = argv[argc - 1];
	}
	const char *sock = getenv("WARM_ADOPT_SOCKET");
	if (sock && *sock && id && *id &&
	    (strcmp(sub, "create") == 0 || strcmp(sub, "start") == 0 || strcmp(sub, "kill") == 0 ||
	     strcmp(sub, "delete") == 0)) {
		char req[16384], reply[8192], err[4096];
		size_t cap = sizeof(req), n = add(req, 0, cap, "{\"op\":\"");
		n = add(req, n, cap, sub);
		n = add(req, n, cap, "\"");
		n = add_field(req, n, cap, "id", id);
		if (*pid_file)
			n = add_field(req, n, cap, "pid_file", pid_file);
		if (*sig)
			n = add_field(req, n, cap, "signal", sig);
		n = add(req, n, cap, "}");
		if (n >= cap)
			return fail(argc, argv, "warm: %s: request too long", sub);
		if (ask(sock, req, strcmp(sub, "create") == 0, reply, sizeof(reply)) < 0)
			return fail(argc, argv, "warm: %s %s: %s", sub, id, strerror(errno));
		if (reply_error(reply, err, sizeof(err)))
			return fail(argc, argv, "warm: %s %s: %s", sub, id, err);
		if (strstr(reply, "\"handled\":true"))
			return 0;
		if (!strstr(reply, "\"handled\":false"))
			return fail(argc, argv, "warm: %s %s: read shim reply: %s", sub, id, reply);
	}
	const char *real = getenv("WARM_RUNC");
	if (!real || !*real)
		return fail(argc, argv, "warm: exec runc: WARM_RUNC is not set");
	argv[0] = "runc";
	execv(real, argv);
	return fail(argc, argv, "warm: exec %s: %s", real, strerror(errno));
}
