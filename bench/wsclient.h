/* What bench/loadgen.c and bench/renewsim.c share: a station's mutual-TLS websocket
 * session to pkictl (TLS 1.3, subprotocol ocpp2.0.1) and its frames. Header-only, so
 * that each builds with one `cc -O2 FILE.c -lssl -lcrypto`. Loopback only.
 */
#ifndef PKICTL_BENCH_WSCLIENT_H
#define PKICTL_BENCH_WSCLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_STATIONS 4096
#define BUFFER 65536

typedef struct {
    char id[64];
    int fd;
    SSL *ssl;
    unsigned char in[BUFFER]; /* bytes read and not yet taken as frames */
    size_t have;
    char text[BUFFER]; /* the last text frame's payload, NUL-terminated */
} Session;

static unsigned int mask_seed = 12345;

static void die(const char *what, const char *id) {
    fprintf(stderr, "%s: %s\n", id, what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage used;
    getrusage(RUSAGE_SELF, &used);
    return used.ru_utime.tv_sec + used.ru_utime.tv_usec / 1e6 + used.ru_stime.tv_sec +
           used.ru_stime.tv_usec / 1e6;
}

static SSL_CTX *client_context(const char *root) {
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(context, root, NULL) != 1) die("cannot load the root", root);
    return context;
}

/* Returns 0 when all was written; -1 when the connection failed. Messages are small
 * and the peer is on loopback, so a full socket buffer is only waited out. */
static int try_write_all(Session *s, const unsigned char *data, int length) {
    while (length > 0) {
        int written = SSL_write(s->ssl, data, length);
        if (written > 0) {
            data += written;
            length -= written;
            continue;
        }
        int error = SSL_get_error(s->ssl, written);
        if (error != SSL_ERROR_WANT_WRITE && error != SSL_ERROR_WANT_READ) return -1;
    }
    return 0;
}

static void write_all(Session *s, const unsigned char *data, int length) {
    if (try_write_all(s, data, length) != 0) die("write failed", s->id);
}

/* A masked frame (a client must mask): opcode 0x1 text, 0x8 close. */
static void send_frame(Session *s, int opcode, const char *payload, int length) {
    static unsigned char frame[BUFFER + 8];
    int head = 2;
    if (length > BUFFER) die("message too long", s->id);
    frame[0] = 0x80 | opcode;
    if (length < 126) {
        frame[1] = 0x80 | length;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = length >> 8;
        frame[3] = length & 0xff;
        head = 4;
    }
    unsigned char mask[4];
    for (int i = 0; i < 4; i++) mask[i] = rand_r(&mask_seed) & 0xff;
    memcpy(frame + head, mask, 4);
    for (int i = 0; i < length; i++) frame[head + 4 + i] = payload[i] ^ mask[i & 3];
    write_all(s, frame, head + 4 + length);
}

static void send_text(Session *s, const char *text, int length) { send_frame(s, 0x1, text, length); }

/* The close frame with code 1000 (normal closure). */
static void send_close(Session *s) { send_frame(s, 0x8, "\x03\xe8", 2); }

enum { FRAME_NONE, FRAME_TEXT, FRAME_CLOSE };

/* Takes the next complete frame off `in`: a text frame's payload goes to `text`
 * (FRAME_TEXT); a close frame is FRAME_CLOSE; a ping is answered; FRAME_NONE when no
 * complete frame is left. What follows a frame stays for the next call. */
static int next_frame(Session *s) {
    for (;;) {
        if (s->have < 2) return FRAME_NONE;
        size_t length = s->in[1] & 0x7f, offset = 2;
        if (length == 126) {
            if (s->have < 4) return FRAME_NONE;
            length = (s->in[2] << 8) | s->in[3];
            offset = 4;
        } else if (length == 127) {
            die("frame too long", s->id);
        }
        if (s->have < offset + length) return FRAME_NONE;
        int opcode = s->in[0] & 0x0f, kind = FRAME_NONE;
        if (opcode == 0x1) {
            memcpy(s->text, s->in + offset, length);
            s->text[length] = 0;
            kind = FRAME_TEXT;
        } else if (opcode == 0x8) {
            snprintf(s->text, sizeof s->text, "closed by the server (%d %.*s)",
                     length >= 2 ? (s->in[offset] << 8) | s->in[offset + 1] : 0,
                     length > 2 ? (int)length - 2 : 0, s->in + offset + 2);
            kind = FRAME_CLOSE;
        } else if (opcode == 0x9) { /* ping: pong, zero mask */
            unsigned char pong[2 + 4 + 125] = {0x8a, 0x80 | (unsigned char)length, 0, 0, 0, 0};
            memcpy(pong + 6, s->in + offset, length);
            write_all(s, pong, 6 + length);
        }
        memmove(s->in, s->in + offset + length, s->have - offset - length);
        s->have -= offset + length;
        if (kind != FRAME_NONE) return kind;
    }
}

/* Reads what OpenSSL has for a non-blocking session: 1 when more may come, 0 at the end
 * of the connection or on an error. */
static int drain(Session *s) {
    for (;;) {
        if (s->have >= BUFFER - 1) die("input buffer full", s->id);
        int got = SSL_read(s->ssl, s->in + s->have, BUFFER - 1 - s->have);
        if (got > 0) {
            s->have += got;
            continue;
        }
        return SSL_get_error(s->ssl, got) == SSL_ERROR_WANT_READ;
    }
}

/* The websocket upgrade request, once TLS is up. */
static void send_upgrade(Session *s, int port) {
    char request[512];
    int length = snprintf(request, sizeof request,
                          "GET /ocpp/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: cGtpY3RsLWxvYWRnZW4tYw==\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n",
                          s->id, port);
    write_all(s, (unsigned char *)request, length);
}

/* With the response to the upgrade read into `in`: 1 when it was 101 (what follows it
 * is kept), -1 when refused, 0 when incomplete. */
static int upgrade_answered(Session *s) {
    s->in[s->have] = 0;
    char *end = strstr((char *)s->in, "\r\n\r\n");
    if (end == NULL) return 0;
    if (strncmp((char *)s->in, "HTTP/1.1 101", 12) != 0) return -1;
    size_t rest = s->have - ((unsigned char *)end + 4 - s->in);
    memmove(s->in, end + 4, rest);
    s->have = rest;
    return 1;
}

static int tcp_socket(int port, struct sockaddr_in *address) {
    *address = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address->sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A new SSL for the session, verifying the server as 127.0.0.1. */
static SSL *new_ssl(Session *s, SSL_CTX *context) {
    s->ssl = SSL_new(context);
    SSL_set_fd(s->ssl, s->fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), "127.0.0.1");
    s->have = 0;
    return s->ssl;
}

/* Connects, TLS with the station's certificate files, and the websocket upgrade;
 * blocking (set-up only). */
static void open_session(Session *s, SSL_CTX *context, int port, const char *chain,
                         const char *key) {
    struct sockaddr_in address;
    s->fd = tcp_socket(port, &address);
    if (connect(s->fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect failed", s->id);
    SSL *ssl = new_ssl(s, context);
    if (SSL_use_certificate_chain_file(ssl, chain) != 1 ||
        SSL_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) != 1)
        die("cannot load the station's certificate", s->id);
    if (SSL_connect(ssl) != 1) die("TLS handshake failed", s->id);
    send_upgrade(s, port);
    int answered;
    while ((answered = upgrade_answered(s)) == 0) {
        int got = SSL_read(ssl, s->in + s->have, BUFFER - 1 - s->have);
        if (got <= 0) die("upgrade failed", s->id);
        s->have += got;
    }
    if (answered < 0) die("upgrade refused", s->id);
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

#endif
