/* The station simulator of bench/renewal.py in C (`--client c`): the same renewal as
 * its Python stations, at a small fraction of their CPU, so that on one 2-core machine
 * the pkictl workers, not the simulator, take the cores.
 *
 * Built by bench/renewal.py with `cc -O2 renewsim.c -lssl -lcrypto` (OpenSSL 3 headers).
 * Usage: renewsim CONFIG, where CONFIG holds the line "PORT TIMEOUT_S ROOT_PEM", the
 * organization on a line of its own, then one line "STATION_ID CHAIN_PEM KEY_PEM SERIAL"
 * per station. Each station connects with its certificate (blocking, one after the
 * other) and waits; then prints {"ready": N}. In one epoll loop, each station then does
 * what a charging station does when the CSMS renews its certificate:
 *   TriggerMessage(SignChargingStationCertificate) -> answer Accepted, send
 *   SignCertificate with the CSR of a new P-256 key (CN = SERIAL, O = organization;
 *   key and CSR made during set-up, so that the cores go to the servers);
 *   CertificateSigned -> Rejected unless the leaf holds the new key, else Accepted,
 *   then close the session and connect again with the new chain and key, retrying a
 *   refused attempt after 1, 2, 4 ... s; admitted (101) confirms the renewal.
 * Any other call is answered NotImplemented. At the end it prints
 * {"done": [[CONFIRMED_AT, DELIVERY_S], ...], "cpu_s": C, "retries": R} as the Python
 * worker does: the epoch second each station was admitted again, and how long after
 * the SignCertificate answer its CertificateSigned arrived. Exits 1 with a reason on
 * anything unexpected, or when TIMEOUT_S passes first. Loopback only.
 */
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "wsclient.h"

enum { WAITING, CLOSING, CONNECTING, HANDSHAKING, UPGRADING, LEAVING, RETRYING, DONE };

typedef struct {
    Session session;
    char serial[64];
    int state;
    EVP_PKEY *key;           /* the new key */
    char *sign_request;      /* SignCertificate with its CSR */
    int sign_request_length;
    X509 *leaf;              /* the new certificate, from CertificateSigned on */
    STACK_OF(X509) *chain;   /* what came after it */
    double sign_answered, delivered, confirmed_at, retry_at, pause;
} Station;

static Station stations[MAX_STATIONS];
static SSL_CTX *context;
static int poll_fd, port, retrying, retries;
static char organization[256];

static double epoch_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void watch(Station *station, int operation, unsigned int events) {
    struct epoll_event event = {.events = events, .data.ptr = station};
    if (epoll_ctl(poll_fd, operation, station->session.fd, &event) != 0)
        die("epoll_ctl failed", station->session.id);
}

static const char *skip(const char *p) {
    while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

/* The JSON string at `p` (its opening quote) unescaped into `out`; what follows it,
 * or NULL when `p` holds no string that fits. */
static const char *json_string(const char *p, char *out, size_t size) {
    if (*p != '"') return NULL;
    size_t used = 0;
    for (p++; *p != '"'; p++) {
        if (*p == 0 || used + 1 >= size) return NULL;
        char c = *p;
        if (c == '\\') {
            switch (*++p) {
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case '"': case '\\': case '/': c = *p; break;
            default: return NULL; /* \uXXXX and the rest: not in what we read */
            }
        }
        out[used++] = c;
    }
    out[used] = 0;
    return p + 1;
}

/* The string value of "key" in a JSON object, or NULL. */
static const char *field(const char *object, const char *key, char *out, size_t size) {
    char quoted[80];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = strstr(object, quoted);
    if (p == NULL) return NULL;
    p = skip(p + strlen(quoted));
    if (*p != ':') return NULL;
    return json_string(skip(p + 1), out, size) ? out : NULL;
}

static void send_answer(Station *station, const char *id, const char *payload) {
    char message[512];
    int length = snprintf(message, sizeof message, "[3, \"%s\", %s]", id, payload);
    send_text(&station->session, message, length);
}

/* The station's next key and its SignCertificate request, made during set-up: a station
 * makes them when triggered, but the CSMS sees the same messages either way, and the
 * cores are left to the servers under test. */
static void prepare_csr(Station *station) {
    const char *id = station->session.id;
    station->key = EVP_EC_gen("P-256");
    X509_REQ *request = X509_REQ_new();
    X509_NAME *name = X509_REQ_get_subject_name(request);
    if (station->key == NULL || !X509_REQ_set_version(request, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    (unsigned char *)station->serial, -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (unsigned char *)organization,
                                    -1, -1, 0) ||
        !X509_REQ_set_pubkey(request, station->key) ||
        !X509_REQ_sign(request, station->key, EVP_sha256()))
        die("cannot make the CSR", id);
    BIO *pem = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(pem, request);
    char *csr;
    long csr_length = BIO_get_mem_data(pem, &csr);
    char message[4096];
    int length = snprintf(message, sizeof message, "[2, \"sign\", \"SignCertificate\", {\"csr\": \"");
    for (long i = 0; i < csr_length && length < (int)sizeof message - 64; i++) {
        if (csr[i] == '\n') {
            message[length++] = '\\';
            message[length++] = 'n';
        } else {
            message[length++] = csr[i];
        }
    }
    length += snprintf(message + length, sizeof message - length,
                       "\", \"certificateType\": \"ChargingStationCertificate\"}]");
    station->sign_request = strndup(message, length);
    station->sign_request_length = length;
    BIO_free(pem);
    X509_REQ_free(request);
}

/* The certificates after the leaf, parsed once for all stations while they are the same
 * (the issuing CA's): OpenSSL 3.0 takes ~120 us to parse one. */
static STACK_OF(X509) *issuers(const char *pem_text) {
    static char *cached_text;
    static STACK_OF(X509) *cached;
    if (cached_text != NULL && strcmp(cached_text, pem_text) == 0) return cached;
    BIO *pem = BIO_new_mem_buf(pem_text, -1);
    STACK_OF(X509) *parsed = sk_X509_new_null();
    X509 *next;
    while ((next = PEM_read_bio_X509(pem, NULL, NULL, NULL)) != NULL) sk_X509_push(parsed, next);
    ERR_clear_error(); /* the end of the PEM data */
    BIO_free(pem);
    free(cached_text); /* (a stack given to a station before stays with it) */
    cached_text = strdup(pem_text);
    return cached = parsed;
}

/* CertificateSigned: whether the chain's leaf holds the key of our CSR (kept if so). */
static int take_chain(Station *station, const char *payload) {
    static char chain[BUFFER];
    static const char end_marker[] = "-----END CERTIFICATE-----";
    if (field(payload, "certificateChain", chain, sizeof chain) == NULL) return 0;
    char *leaf_end = strstr(chain, end_marker);
    if (leaf_end == NULL) return 0;
    leaf_end += strlen(end_marker);
    BIO *pem = BIO_new_mem_buf(chain, (int)(leaf_end - chain));
    X509 *leaf = PEM_read_bio_X509(pem, NULL, NULL, NULL);
    BIO_free(pem);
    if (leaf == NULL || EVP_PKEY_eq(X509_get0_pubkey(leaf), station->key) != 1) {
        X509_free(leaf);
        return 0;
    }
    station->leaf = leaf;
    station->chain = issuers(leaf_end);
    return 1;
}

/* One message of the first session. */
static void handle(Station *station, const char *text) {
    const char *who = station->session.id;
    char id[128], action[64];
    const char *p = skip(text);
    if (*p != '[') die(text, who);
    char *end;
    long type = strtol(skip(p + 1), &end, 10);
    p = json_string(skip(end), id, sizeof id);
    if (p == NULL) die(text, who);
    if (type == 3 && strcmp(id, "sign") == 0) { /* our SignCertificate, answered */
        if (strstr(p, "\"Accepted\"") == NULL) die(text, who);
        if (!station->sign_answered) station->sign_answered = now_s();
        return;
    }
    if (type != 2 || (p = json_string(skip(p), action, sizeof action)) == NULL) die(text, who);
    if (strcmp(action, "TriggerMessage") == 0) {
        send_answer(station, id, "{\"status\": \"Accepted\"}");
        send_text(&station->session, station->sign_request, station->sign_request_length);
    } else if (strcmp(action, "CertificateSigned") == 0) {
        if (!take_chain(station, p)) {
            send_answer(station, id, "{\"status\": \"Rejected\"}");
            die("CertificateSigned without a chain for the new key", who);
        }
        station->delivered = now_s();
        if (!station->sign_answered) station->sign_answered = station->delivered;
        send_answer(station, id, "{\"status\": \"Accepted\"}");
        send_close(&station->session); /* then connect again with the new certificate */
        station->state = CLOSING;
    } else {
        char message[256];
        int length = snprintf(message, sizeof message, "[4, \"%s\", \"NotImplemented\", \"\", {}]", id);
        send_text(&station->session, message, length);
    }
}

static void hang_up(Station *station) {
    Session *s = &station->session;
    epoll_ctl(poll_fd, EPOLL_CTL_DEL, s->fd, NULL);
    if (s->ssl != NULL) SSL_free(s->ssl);
    s->ssl = NULL;
    close(s->fd);
}

static void connect_again(Station *station) {
    struct sockaddr_in address;
    Session *s = &station->session;
    s->fd = tcp_socket(port, &address);
    set_nonblocking(s->fd);
    station->state = CONNECTING;
    if (connect(s->fd, (struct sockaddr *)&address, sizeof address) != 0 && errno != EINPROGRESS)
        die("connect failed", s->id);
    watch(station, EPOLL_CTL_ADD, EPOLLOUT);
}

/* A refused or dropped attempt: again after a pause (1, 2, 4 ... 30 s). */
static void attempt_failed(Station *station) {
    hang_up(station);
    ERR_clear_error();
    retries++;
    retrying++;
    station->pause = station->pause ? (station->pause * 2 > 30 ? 30 : station->pause * 2) : 1;
    station->retry_at = now_s() + station->pause;
    station->state = RETRYING;
}

static void handshake(Station *station) {
    Session *s = &station->session;
    int done = SSL_connect(s->ssl);
    if (done == 1) {
        send_upgrade(s, port);
        station->state = UPGRADING;
        watch(station, EPOLL_CTL_MOD, EPOLLIN);
        return;
    }
    int error = SSL_get_error(s->ssl, done);
    if (error == SSL_ERROR_WANT_READ) watch(station, EPOLL_CTL_MOD, EPOLLIN);
    else if (error == SSL_ERROR_WANT_WRITE) watch(station, EPOLL_CTL_MOD, EPOLLOUT);
    else attempt_failed(station);
}

/* Whether the session has ended: the server's close frame, or the end of the connection
 * (text frames meanwhile are late and ignored). */
static int closed(Session *s) {
    int open = drain(s), kind;
    while ((kind = next_frame(s)) == FRAME_TEXT) continue;
    return kind == FRAME_CLOSE || !open;
}

/* Moves a station on by what its socket says. Returns 1 once it is done. */
static int step(Station *station) {
    Session *s = &station->session;
    switch (station->state) {
    case WAITING: {
        int open = drain(s), kind;
        while (station->state == WAITING && (kind = next_frame(s)) != FRAME_NONE) {
            if (kind == FRAME_CLOSE) die(s->text, s->id);
            handle(station, s->text);
        }
        if (station->state == WAITING && !open) die("the CSMS closed the connection", s->id);
        if (station->state == CLOSING && closed(s)) {
            hang_up(station);
            connect_again(station);
        }
        return 0;
    }
    case CLOSING:
        if (closed(s)) {
            hang_up(station);
            connect_again(station);
        }
        return 0;
    case CONNECTING: {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error != 0) {
            attempt_failed(station);
            return 0;
        }
        SSL *ssl = new_ssl(s, context);
        if (SSL_use_certificate(ssl, station->leaf) != 1 ||
            SSL_set1_chain(ssl, station->chain) != 1 ||
            SSL_use_PrivateKey(ssl, station->key) != 1)
            die("cannot use the new certificate", s->id);
        station->state = HANDSHAKING;
        handshake(station);
        return 0;
    }
    case HANDSHAKING:
        handshake(station);
        return 0;
    case UPGRADING: {
        int open = drain(s), answered = upgrade_answered(s);
        if (answered == 1) {
            station->confirmed_at = epoch_s(); /* admitted with the new certificate */
            send_close(s);
            station->state = LEAVING;
            if (closed(s)) break;
        } else if (answered < 0 || !open) {
            attempt_failed(station);
        }
        return 0;
    }
    case LEAVING:
        if (closed(s)) break;
        return 0;
    default:
        return 0;
    }
    hang_up(station);
    station->state = DONE;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: renewsim CONFIG", "renewsim");
    FILE *config = fopen(argv[1], "r");
    if (config == NULL) die("cannot open the config", argv[1]);
    double timeout;
    char root[4096], chain[4096], key[4096];
    if (fscanf(config, "%d %lf %4095s ", &port, &timeout, root) != 3 ||
        fgets(organization, sizeof organization, config) == NULL)
        die("bad config", argv[1]);
    organization[strcspn(organization, "\n")] = 0;
    context = client_context(root);
    int count = 0;
    while (count < MAX_STATIONS &&
           fscanf(config, "%63s %4095s %4095s %63s", stations[count].session.id, chain, key,
                  stations[count].serial) == 4) {
        open_session(&stations[count].session, context, port, chain, key);
        prepare_csr(&stations[count]);
        count++;
    }
    if (fscanf(config, "%63s", chain) == 1) die("more stations than this build takes (4096)", argv[1]);
    fclose(config);

    poll_fd = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        set_nonblocking(stations[i].session.fd);
        watch(&stations[i], EPOLL_CTL_ADD, EPOLLIN);
    }
    printf("{\"ready\": %d}\n", count);
    fflush(stdout);
    double deadline = now_s() + timeout;
    int remaining = count;
    struct epoll_event events[256];
    while (remaining > 0) {
        if (now_s() > deadline) {
            fprintf(stderr, "renewsim: %d of %d stations not renewed in %.0f s\n", remaining,
                    count, timeout);
            return 1;
        }
        int ready = epoll_wait(poll_fd, events, 256, retrying ? 50 : 1000);
        if (ready < 0 && errno != EINTR) die("epoll failed", "renewsim");
        for (int e = 0; e < ready; e++) remaining -= step(events[e].data.ptr);
        for (int i = 0; retrying > 0 && i < count; i++) {
            if (stations[i].state == RETRYING && stations[i].retry_at <= now_s()) {
                retrying--;
                connect_again(&stations[i]);
            }
        }
    }
    printf("{\"done\": [");
    for (int i = 0; i < count; i++) {
        double delivery = stations[i].delivered - stations[i].sign_answered;
        printf("%s[%.6f, %.6f]", i ? ", " : "", stations[i].confirmed_at,
               delivery > 0 ? delivery : 0.0);
    }
    printf("], \"cpu_s\": %.6f, \"retries\": %d}\n", cpu_s(), retries);
    return 0;
}
