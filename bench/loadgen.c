/* The message-mix load generator of bench/fleet.py in C (`--client c`): the same
 * stations, certificates and mix as the Python and Node.js clients, at a small
 * fraction of their CPU per message, so that the servers take the cores.
 *
 * Built by bench/fleet.py with `cc -O2 loadgen.c -lssl -lcrypto` (OpenSSL 3 headers).
 * Usage: loadgen CONFIG, where CONFIG holds the line "PORT DURATION_S ROOT_PEM", then
 * one line "STATION_ID CHAIN_PEM KEY_PEM" per station. Each station connects (TLS 1.3
 * with its certificate, websocket upgrade, subprotocol ocpp2.0.1) and boots, one after
 * the other; then all send the mix one message at a time each, waiting for each answer,
 * until the duration is up (one epoll loop). Prints "started" when all have booted,
 * then {"answered": N, "elapsed_s": T, "cpu_s": C}. Loopback only.
 */
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
    unsigned char in[BUFFER];
    size_t have;
    long n;
    int done;
} Station;

static Station stations[MAX_STATIONS];
static unsigned int seed = 12345;

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

static void timestamp(char *out, size_t size) {
    struct timespec t;
    struct tm parts;
    clock_gettime(CLOCK_REALTIME, &t);
    gmtime_r(&t.tv_sec, &parts);
    size_t used = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &parts);
    snprintf(out + used, size - used, ".%03ldZ", t.tv_nsec / 1000000);
}

/* The n-th message of a station's steady mix, as bench/fleet.py's mix() builds it. */
static int mix(const Station *s, long n, char *out, size_t size) {
    char at[40];
    timestamp(at, sizeof at);
    switch (n % 4) {
    case 0:
        return snprintf(out, size, "[2, \"m%ld\", \"Heartbeat\", {}]", n);
    case 1:
        return snprintf(out, size,
                        "[2, \"m%ld\", \"StatusNotification\", {\"timestamp\": \"%s\", "
                        "\"connectorStatus\": \"Occupied\", \"evseId\": 1, \"connectorId\": 1}]",
                        n, at);
    case 2:
        return snprintf(out, size,
                        "[2, \"m%ld\", \"TransactionEvent\", {\"eventType\": \"Updated\", "
                        "\"timestamp\": \"%s\", \"triggerReason\": \"MeterValuePeriodic\", "
                        "\"seqNo\": %ld, \"transactionInfo\": {\"transactionId\": \"TX-%s\"}, "
                        "\"meterValue\": [{\"timestamp\": \"%s\", \"sampledValue\": "
                        "[{\"value\": %.1f}]}]}]",
                        n, at, n, s->id, at, 1000.0 + n);
    default:
        return snprintf(out, size,
                        "[2, \"m%ld\", \"MeterValues\", {\"evseId\": 1, \"meterValue\": "
                        "[{\"timestamp\": \"%s\", \"sampledValue\": [{\"value\": %.1f}]}]}]",
                        n, at, 1000.0 + n);
    }
}

static void write_all(Station *s, const unsigned char *data, int length) {
    while (length > 0) {
        int written = SSL_write(s->ssl, data, length);
        if (written > 0) {
            data += written;
            length -= written;
            continue;
        }
        int error = SSL_get_error(s->ssl, written);
        if (error != SSL_ERROR_WANT_WRITE && error != SSL_ERROR_WANT_READ) die("write failed", s->id);
    }
}

/* A masked text frame (a client must mask). */
static void send_text(Station *s, const char *text, int length) {
    unsigned char frame[BUFFER];
    int head = 2;
    frame[0] = 0x81;
    if (length < 126) {
        frame[1] = 0x80 | length;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = length >> 8;
        frame[3] = length & 0xff;
        head = 4;
    }
    unsigned char mask[4];
    for (int i = 0; i < 4; i++) mask[i] = rand_r(&seed) & 0xff;
    memcpy(frame + head, mask, 4);
    for (int i = 0; i < length; i++) frame[head + 4 + i] = text[i] ^ mask[i & 3];
    write_all(s, frame, head + 4 + length);
}

/* The next complete text frame's payload, moved to the front of the buffer and
 * NUL-terminated, or NULL. One message is in flight per station: nothing follows an
 * answer, so the caller empties the buffer once it has read the payload. */
static char *next_text(Station *s) {
    for (;;) {
        if (s->have < 2) return NULL;
        size_t length = s->in[1] & 0x7f, offset = 2;
        if (length == 126) {
            if (s->have < 4) return NULL;
            length = (s->in[2] << 8) | s->in[3];
            offset = 4;
        } else if (length == 127) {
            die("frame too long", s->id);
        }
        if (s->have < offset + length) return NULL;
        int opcode = s->in[0] & 0x0f;
        if (opcode == 0x1) {
            memmove(s->in, s->in + offset, length);
            s->in[length] = 0;
            return (char *)s->in;
        }
        if (opcode == 0x8) {
            char reason[160];
            snprintf(reason, sizeof reason, "closed by the server (%d %.*s)",
                     length >= 2 ? (s->in[offset] << 8) | s->in[offset + 1] : 0,
                     length > 2 ? (int)length - 2 : 0, s->in + offset + 2);
            die(reason, s->id);
        }
        if (opcode == 0x9) { /* ping: pong, zero mask */
            unsigned char pong[2 + 4 + 125] = {0x8a, 0x80 | (unsigned char)length, 0, 0, 0, 0};
            memcpy(pong + 6, s->in + offset, length);
            write_all(s, pong, 6 + length);
        }
        memmove(s->in, s->in + offset + length, s->have - offset - length);
        s->have -= offset + length;
    }
}

/* Blocking until one text frame has arrived (set-up only). */
static char *read_text(Station *s) {
    char *text;
    while ((text = next_text(s)) == NULL) {
        int got = SSL_read(s->ssl, s->in + s->have, BUFFER - 1 - s->have);
        if (got <= 0) die("read failed", s->id);
        s->have += got;
    }
    s->have = 0;
    return text;
}

static void connect_station(Station *s, SSL_CTX *context, int port, const char *chain,
                            const char *key) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s->fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect failed", s->id);
    s->ssl = SSL_new(context);
    if (SSL_use_certificate_chain_file(s->ssl, chain) != 1 ||
        SSL_use_PrivateKey_file(s->ssl, key, SSL_FILETYPE_PEM) != 1)
        die("cannot load the station's certificate", s->id);
    SSL_set_fd(s->ssl, s->fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), "127.0.0.1");
    if (SSL_connect(s->ssl) != 1) die("TLS handshake failed", s->id);
    char request[512];
    int length = snprintf(request, sizeof request,
                          "GET /ocpp/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: cGtpY3RsLWxvYWRnZW4tYw==\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n",
                          s->id, port);
    write_all(s, (unsigned char *)request, length);
    for (;;) { /* the 101 response, up to its blank line */
        int got = SSL_read(s->ssl, s->in + s->have, BUFFER - 1 - s->have);
        if (got <= 0) die("upgrade failed", s->id);
        s->have += got;
        s->in[s->have] = 0;
        char *end = strstr((char *)s->in, "\r\n\r\n");
        if (end == NULL) continue;
        if (strncmp((char *)s->in, "HTTP/1.1 101", 12) != 0) die("upgrade refused", s->id);
        size_t rest = s->have - ((unsigned char *)end + 4 - s->in);
        memmove(s->in, end + 4, rest);
        s->have = rest;
        break;
    }
    const char *boot = "[2, \"b\", \"BootNotification\", {\"reason\": \"PowerUp\", "
                       "\"chargingStation\": {\"model\": \"Bench\", \"vendorName\": \"pkictl\"}}]";
    send_text(s, boot, strlen(boot));
    if (strstr(read_text(s), "Accepted") == NULL) die("boot not accepted", s->id);
}

static void send_next(Station *s, double deadline) {
    if (now_s() >= deadline) {
        s->done = 1;
        return;
    }
    char message[1024];
    int length = mix(s, s->n, message, sizeof message);
    send_text(s, message, length);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: loadgen CONFIG", "loadgen");
    FILE *config = fopen(argv[1], "r");
    if (config == NULL) die("cannot open the config", argv[1]);
    int port;
    double duration;
    char root[4096], chain[4096], key[4096];
    if (fscanf(config, "%d %lf %4095s", &port, &duration, root) != 3) die("bad config", argv[1]);
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(context, root, NULL) != 1) die("cannot load the root", root);
    int count = 0;
    while (count < MAX_STATIONS &&
           fscanf(config, "%63s %4095s %4095s", stations[count].id, chain, key) == 3) {
        connect_station(&stations[count], context, port, chain, key);
        count++;
    }
    if (fscanf(config, "%63s", chain) == 1) die("more stations than this build takes (4096)", argv[1]);
    fclose(config);

    int poll = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        fcntl(stations[i].fd, F_SETFL, fcntl(stations[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &stations[i]};
        epoll_ctl(poll, EPOLL_CTL_ADD, stations[i].fd, &event);
    }
    printf("started\n");
    fflush(stdout);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    double started = now_s(), deadline = started + duration;
    long answered = 0;
    int running = 0;
    for (int i = 0; i < count; i++) {
        send_next(&stations[i], deadline);
        running += !stations[i].done;
    }
    struct epoll_event events[256];
    while (running > 0) {
        int ready = epoll_wait(poll, events, 256, 1000);
        if (ready < 0 && errno != EINTR) die("epoll failed", "loadgen");
        for (int e = 0; e < ready; e++) {
            Station *s = events[e].data.ptr;
            for (;;) { /* drain what OpenSSL has */
                int got = SSL_read(s->ssl, s->in + s->have, BUFFER - 1 - s->have);
                if (got <= 0) {
                    int error = SSL_get_error(s->ssl, got);
                    if (error == SSL_ERROR_WANT_READ) break;
                    die("read failed", s->id);
                }
                s->have += got;
            }
            char *text = next_text(s);
            if (text == NULL || s->done) continue;
            if (strncmp(text, "[3,", 3) != 0) die(text, s->id);
            s->have = 0;
            answered++;
            s->n++;
            send_next(s, deadline);
            if (s->done) running--;
        }
    }
    double elapsed = now_s() - started;
    getrusage(RUSAGE_SELF, &after);
    double cpu = (after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
                 (after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1e6 +
                 (after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                 (after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6;
    printf("{\"answered\": %ld, \"elapsed_s\": %.6f, \"cpu_s\": %.6f}\n", answered, elapsed, cpu);
    fflush(stdout);
    /* The closing handshake: a close frame each, then the server's, so that every
     * session has ended on the server before the next round connects the same ids. */
    for (int i = 0; i < count; i++) {
        unsigned char close_frame[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
        write_all(&stations[i], close_frame, sizeof close_frame);
        stations[i].done = 0;
    }
    int open_count = count;
    double closing_deadline = now_s() + 10;
    while (open_count > 0 && now_s() < closing_deadline) {
        int ready = epoll_wait(poll, events, 256, 1000);
        for (int e = 0; e < ready; e++) {
            Station *s = events[e].data.ptr;
            if (s->done) continue;
            int got = SSL_read(s->ssl, s->in, BUFFER - 1);
            if (got > 0 && (s->in[0] & 0x0f) != 0x8) continue; /* not the close yet */
            if (got <= 0 && SSL_get_error(s->ssl, got) == SSL_ERROR_WANT_READ) continue;
            s->done = 1; /* the server's close frame, or the end of the connection */
            epoll_ctl(poll, EPOLL_CTL_DEL, s->fd, NULL);
            close(s->fd);
            open_count--;
        }
    }
    return 0;
}
