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
#include "wsclient.h"

typedef struct {
    Session session;
    long n;
    int done;
} Station;

static Station stations[MAX_STATIONS];

static void timestamp(char *out, size_t size) {
    struct timespec t;
    struct tm parts;
    clock_gettime(CLOCK_REALTIME, &t);
    gmtime_r(&t.tv_sec, &parts);
    size_t used = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &parts);
    snprintf(out + used, size - used, ".%03ldZ", t.tv_nsec / 1000000);
}

/* The n-th message of a station's steady mix, as bench/fleet.py's mix() builds it. */
static int mix(const Station *station, long n, char *out, size_t size) {
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
                        n, at, n, station->session.id, at, 1000.0 + n);
    default:
        return snprintf(out, size,
                        "[2, \"m%ld\", \"MeterValues\", {\"evseId\": 1, \"meterValue\": "
                        "[{\"timestamp\": \"%s\", \"sampledValue\": [{\"value\": %.1f}]}]}]",
                        n, at, 1000.0 + n);
    }
}

/* Blocking until one text frame has arrived (set-up only). */
static char *read_text(Session *s) {
    int kind;
    while ((kind = next_frame(s)) != FRAME_TEXT) {
        if (kind == FRAME_CLOSE) die(s->text, s->id);
        int got = SSL_read(s->ssl, s->in + s->have, BUFFER - 1 - s->have);
        if (got <= 0) die("read failed", s->id);
        s->have += got;
    }
    return s->text;
}

static void connect_station(Station *station, SSL_CTX *context, int port, const char *chain,
                            const char *key) {
    Session *s = &station->session;
    open_session(s, context, port, chain, key);
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
    send_text(&s->session, message, length);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: loadgen CONFIG", "loadgen");
    FILE *config = fopen(argv[1], "r");
    if (config == NULL) die("cannot open the config", argv[1]);
    int port;
    double duration;
    char root[4096], chain[4096], key[4096];
    if (fscanf(config, "%d %lf %4095s", &port, &duration, root) != 3) die("bad config", argv[1]);
    SSL_CTX *context = client_context(root);
    int count = 0;
    while (count < MAX_STATIONS &&
           fscanf(config, "%63s %4095s %4095s", stations[count].session.id, chain, key) == 3) {
        connect_station(&stations[count], context, port, chain, key);
        count++;
    }
    if (fscanf(config, "%63s", chain) == 1) die("more stations than this build takes (4096)", argv[1]);
    fclose(config);

    int poll = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        set_nonblocking(stations[i].session.fd);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &stations[i]};
        epoll_ctl(poll, EPOLL_CTL_ADD, stations[i].session.fd, &event);
    }
    printf("started\n");
    fflush(stdout);
    double cpu_before = cpu_s(), started = now_s(), deadline = started + duration;
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
            Station *station = events[e].data.ptr;
            Session *s = &station->session;
            if (!drain(s)) die("read failed", s->id);
            int kind;
            while (!station->done && (kind = next_frame(s)) != FRAME_NONE) {
                if (kind == FRAME_CLOSE || strncmp(s->text, "[3,", 3) != 0) die(s->text, s->id);
                answered++;
                station->n++;
                send_next(station, deadline);
                if (station->done) running--;
            }
        }
    }
    double elapsed = now_s() - started, cpu = cpu_s() - cpu_before;
    printf("{\"answered\": %ld, \"elapsed_s\": %.6f, \"cpu_s\": %.6f}\n", answered, elapsed, cpu);
    fflush(stdout);
    /* The closing handshake: a close frame each, then the server's, so that every
     * session has ended on the server before the next round connects the same ids. */
    for (int i = 0; i < count; i++) {
        send_close(&stations[i].session);
        stations[i].done = 0;
    }
    int open_count = count;
    double closing_deadline = now_s() + 10;
    while (open_count > 0 && now_s() < closing_deadline) {
        int ready = epoll_wait(poll, events, 256, 1000);
        for (int e = 0; e < ready; e++) {
            Station *station = events[e].data.ptr;
            Session *s = &station->session;
            if (station->done) continue;
            int open = drain(s), kind = FRAME_NONE;
            while (open && (kind = next_frame(s)) == FRAME_TEXT) continue; /* late answers */
            if (open && kind != FRAME_CLOSE) continue; /* not the close yet */
            station->done = 1; /* the server's close frame, or the end of the connection */
            epoll_ctl(poll, EPOLL_CTL_DEL, s->fd, NULL);
            close(s->fd);
            open_count--;
        }
    }
    return 0;
}
