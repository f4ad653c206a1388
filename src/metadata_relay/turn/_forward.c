/*
 * metadata_relay.turn._forward: the per-packet relay path of the TURN server, in C.
 *
 * Why: T1 (issue 7) showed the kernel time per relayed packet already at coturn's level and
 * the remaining gap to be interpreter time in the per-packet Python loops; T1-t and T1-s
 * (issue 15) showed the same for TCP client legs and Send/Data indications. This module
 * moves only those loops out of Python. It decides nothing: what may pass is mirrored from
 * the allocation (turn/allocation.py) by turn/native.py whenever the state machine rebuilds
 * it -- the bound channels (Allocation.out_routes/in_routes) and, for every permitted peer IP,
 * the ports data may use (Allocation.port_range) -- and everything the mirror does not cover
 * (STUN requests, unknown channels, peers without a permission, garbage, oversize) is handed
 * back to Python, where turn/allocation.py and turn/server.py decide as they do for the
 * event-loop edge.
 *
 * What it forwards, both ways:
 *   - ChannelData of bound channels, from UDP clients (datagrams on a listener) and from TCP
 *     clients (frames of a stream, padded to 4, split and coalesced across reads);
 *   - Send indications to permitted peers (FINGERPRINT checked when present), and peer
 *     datagrams without a channel as Data indications to permitted peers;
 *   - to TCP clients through a per-connection output buffer (one send() per poll), with
 *     Python's own writes (STUN answers) going through the same buffer so frames never
 *     interleave.
 *
 * Per allocation relay socket ("slot") C keeps packet/byte counters in both directions; the
 * two token buckets of TURN_MAX_RATE are per allocation (a dual allocation's two slots share
 * the first one's). Python pulls the counters and re-seeds the buckets on its tick.
 *
 * Every call is non-blocking (MSG_DONTWAIT on sockets the caller made non-blocking anyway)
 * and keeps the GIL. Nothing here calls back into Python while a batch is staged except
 * object allocation for returned data; the `busy` flag refuses re-entrant use (e.g. from a
 * finalizer run by the garbage collector) so staged pointers stay valid.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>

#define BATCH 64                 /* datagrams per recvmmsg/sendmmsg */
#define SLOT (65536 + 128)       /* room for any UDP payload plus a frame header and padding */
#define HEAD 64                  /* peer datagrams land this far into their slot */
#define MAX_UDP 65507            /* largest IPv4 UDP payload */
#define LISTENER_ROUNDS 4        /* recvmmsg calls on a listener per poll at most */
#define MAX_EVENTS 256
#define MAX_FD (1 << 22)         /* sanity bound for the fd map */
#define SLOT_BITS 24             /* a handle is generation << SLOT_BITS | index */
#define MAX_LISTENERS 8
#define MAX_PERMS 4096           /* per slot; Python's cap (TurnConfig.max_permissions) is lower */
#define STREAM_MAX_FRAME 65552   /* 20 + 65532: a STUN message; ChannelData is at most 65540 */
#define STREAM_READ 65536        /* bytes per recv from a stream */
#define STREAM_ROUNDS 4          /* recv calls on a stream per poll at most */
#define STREAM_BACKLOG (1 << 18) /* peer data for a TCP client is dropped beyond this backlog */
#define STREAM_OUT_MAX (1 << 22) /* a client that never reads: its stream is closed */

#define KIND_SHIFT 30
#define KIND_SLOT 1u
#define KIND_CONN 2u
#define KIND_LISTENER 3u

static const unsigned char COOKIE[4] = {0x21, 0x12, 0xA4, 0x42};

/* A canonical address: family tag (4, 6; 'S' names a TCP client connection), port, address,
 * scope (zero-filled). */
typedef struct {
    unsigned char b[24];
} akey;

typedef struct entry {
    struct entry *onext; /* chain of the client->peer table, keyed (client, channel) */
    struct entry *inext; /* chain of the peer->client table, keyed (relay fd, peer) */
    struct entry *snext; /* the slot's other entries */
    uint64_t ohash, ihash;
    uint32_t slot;
    int relay_fd;
    uint16_t channel;
    akey client, peer;
    struct sockaddr_storage peer_sa;
    socklen_t peer_len;
} entry;

typedef struct {
    unsigned char ip[16];
    uint16_t lo, hi;
} perm_t;

/* The first member of a slot and of a connection: both are reused, and a handle names one
 * use (generation) of one index. */
typedef struct {
    int used;
    uint64_t gen; /* which open()/attach() it serves now */
} live_t;

typedef struct {
    live_t live;
    int relay_fd;
    int family;      /* AF_INET or AF_INET6: the relay socket's, so the peers' */
    akey client;
    int via_fd;      /* UDP client: the listener it is reached through; -1 for a stream */
    struct sockaddr_storage client_sa;
    socklen_t client_len;
    uint32_t conn;   /* stream client: its connection's index + 1 */
    uint64_t conn_gen;
    int primary;     /* the allocation's first slot: in the client table, holds the buckets */
    uint32_t sibling; /* index + 1 of the other relay of a dual allocation, 0 if none */
    uint32_t cnext;  /* client table chain (index + 1) */
    uint64_t chash;
    entry *entries;
    perm_t *perms;
    size_t nperms;
    unsigned long long pk_out, by_out, pk_in, by_in;
    int limited;
    double up, down; /* tokens (bytes) left in each direction's bucket when limited */
} slot_t;

typedef struct {
    live_t live;
    int fd;
    akey key;        /* how routes name this client */
    uint32_t slot;   /* its allocation's primary slot + 1, 0 if none */
    unsigned char *in;   /* the incomplete frame kept between reads */
    size_t inlen;
    unsigned char *out;  /* bytes not yet written */
    size_t outoff, outlen, outcap;
    int want_out;    /* EPOLLOUT is registered */
    int dirty;       /* in this poll's flush list */
    int pending;     /* attached with bytes not yet framed */
    int dead;        /* EOF, error or garbage: handed back once as closed */
    int reported;
} conn_t;

typedef struct {
    int fd;
    unsigned int n;
} stage_t;

typedef struct {
    PyObject_HEAD
    int epfd;
    int busy;
    uint64_t seed;   /* random per Forwarder: chains cannot be lengthened by chosen keys */
    uint64_t rng[2]; /* transaction ids of Data indications */
    uint64_t opens;  /* generations handed out so far */
    int lfds[MAX_LISTENERS];
    int nlfds;
    /* slots and their free list */
    slot_t *slots;
    size_t nslots, cap;
    uint32_t *freel;
    size_t nfree;
    /* client table: UDP client address -> primary slot */
    uint32_t *cbk;
    size_t ncbk;
    /* connections and their free list */
    conn_t *conns;
    size_t nconns, ccap;
    uint32_t *cfree;
    size_t ncfree;
    uint32_t *dirty;
    size_t ndirty;
    size_t npending; /* connections attached with bytes not yet framed */
    /* fd -> kind << KIND_SHIFT | index + 1 */
    uint32_t *fdmap;
    size_t nfd;
    /* the two route tables: one entry per bound channel, on both chains */
    entry **obk, **ibk;
    size_t nbk, count;
    /* listener receive batch; client->peer sends point into it (or into sbuf) */
    unsigned char *rbuf;
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_storage rname[BATCH];
    struct mmsghdr smsg[BATCH];
    struct iovec siov[BATCH];
    struct sockaddr_storage sname[BATCH];
    /* relay receive batch, sent on to UDP clients from the same slots */
    unsigned char *tbuf;
    struct mmsghdr trmsg[BATCH];
    struct iovec triov[BATCH];
    struct sockaddr_storage tname[BATCH];
    struct mmsghdr tmsg[BATCH];
    struct iovec tiov[BATCH];
    unsigned int tw; /* queued peer->client datagrams */
    int tfd;         /* the listener they go out of */
    /* stream receive buffer: a kept partial frame, then what one recv brings */
    unsigned char *sbuf;
} Forwarder;

/* ---- CRC-32 (FINGERPRINT), slice-by-8 ---------------------------------------------------- */

static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (j = 1; j < 8; j++)
            crc_table[j][i] = crc_table[0][crc_table[j - 1][i] & 0xFF] ^ (crc_table[j - 1][i] >> 8);
}

static uint32_t
crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t a = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
                          | (uint32_t)p[3] << 24);
        c = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF]
            ^ crc_table[5][(a >> 16) & 0xFF] ^ crc_table[4][a >> 24]
            ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- addresses and hashing ------------------------------------------------------------ */

static int
canon(const struct sockaddr_storage *sa, socklen_t len, akey *k)
{
    memset(k, 0, sizeof *k);
    if (sa->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        k->b[0] = 4;
        memcpy(k->b + 2, &s->sin_port, 2);
        memcpy(k->b + 4, &s->sin_addr, 4);
        return 0;
    }
    if (sa->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        k->b[0] = 6;
        memcpy(k->b + 2, &s->sin6_port, 2);
        memcpy(k->b + 4, &s->sin6_addr, 16);
        memcpy(k->b + 20, &s->sin6_scope_id, 4);
        return 0;
    }
    return -1;
}

static uint64_t
mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static uint64_t
hkey(uint64_t secret, uint64_t seed, const akey *k)
{
    uint64_t w[3];
    memcpy(w, k->b, sizeof w);
    return mix(mix(mix(mix(secret, seed), w[0]), w[1]), w[2]);
}

static uint64_t
next_random(Forwarder *f)
{
    /* xorshift128+: transaction ids of Data indications need to differ, not to be secret
     * (Python's path uses random.randbytes) */
    uint64_t s1 = f->rng[0];
    const uint64_t s0 = f->rng[1];
    f->rng[0] = s0;
    s1 ^= s1 << 23;
    f->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return f->rng[1] + s0;
}

static int
sa_from_bytes(PyObject *obj, struct sockaddr_storage *sa, socklen_t *len, akey *k)
{
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(obj, &p, &n) < 0)
        return -1;
    if (n < (Py_ssize_t)sizeof(struct sockaddr_in) || n > (Py_ssize_t)sizeof(*sa)) {
        PyErr_SetString(PyExc_ValueError, "not a sockaddr_in/sockaddr_in6");
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    memcpy(sa, p, (size_t)n);
    if (canon(sa, (socklen_t)n, k) < 0) {
        PyErr_SetString(PyExc_ValueError, "not a sockaddr_in/sockaddr_in6");
        return -1;
    }
    *len = sa->ss_family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in)
                                    : (socklen_t)sizeof(struct sockaddr_in6);
    return 0;
}

/* ---- the fd map ------------------------------------------------------------------------- */

static int
fd_reserve(Forwarder *f, int fd)
{
    if (fd < 0 || fd >= MAX_FD) {
        PyErr_SetString(PyExc_ValueError, "bad fd");
        return -1;
    }
    if ((size_t)fd >= f->nfd) {
        size_t n = f->nfd ? f->nfd : 64;
        uint32_t *m;
        while (n <= (size_t)fd)
            n *= 2;
        m = PyMem_Realloc(f->fdmap, n * sizeof *m);
        if (m == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(m + f->nfd, 0, (n - f->nfd) * sizeof *m);
        f->fdmap = m;
        f->nfd = n;
    }
    if (f->fdmap[fd]) {
        PyErr_SetString(PyExc_ValueError, "fd already known to the forwarder");
        return -1;
    }
    return 0;
}

static uint32_t
fd_lookup(Forwarder *f, int fd)
{
    return fd >= 0 && (size_t)fd < f->nfd ? f->fdmap[fd] : 0;
}

/* ---- route tables --------------------------------------------------------------------- */

static int
grow(Forwarder *f)
{
    size_t nb = f->nbk ? f->nbk * 2 : 64, i;
    entry **o = PyMem_Calloc(nb, sizeof *o), **in = PyMem_Calloc(nb, sizeof *in);
    if (o == NULL || in == NULL) {
        PyMem_Free(o);
        PyMem_Free(in);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < f->nbk; i++) {
        entry *e = f->obk[i], *next;
        for (; e != NULL; e = next) {
            next = e->onext;
            e->onext = o[e->ohash & (nb - 1)];
            o[e->ohash & (nb - 1)] = e;
        }
        for (e = f->ibk[i]; e != NULL; e = next) {
            next = e->inext;
            e->inext = in[e->ihash & (nb - 1)];
            in[e->ihash & (nb - 1)] = e;
        }
    }
    PyMem_Free(f->obk);
    PyMem_Free(f->ibk);
    f->obk = o;
    f->ibk = in;
    f->nbk = nb;
    return 0;
}

static void
unlink_entry(Forwarder *f, entry *e)
{
    entry **pp = &f->obk[e->ohash & (f->nbk - 1)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->onext;
    if (*pp == e)
        *pp = e->onext;
    pp = &f->ibk[e->ihash & (f->nbk - 1)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->inext;
    if (*pp == e)
        *pp = e->inext;
    f->count--;
}

static void
clear_routes(Forwarder *f, slot_t *s)
{
    entry *e = s->entries, *next;
    for (; e != NULL; e = next) {
        next = e->snext;
        unlink_entry(f, e);
        PyMem_Free(e);
    }
    s->entries = NULL;
}

static entry *
find_out(Forwarder *f, const akey *client, unsigned int channel)
{
    uint64_t h;
    entry *e;
    if (f->count == 0)
        return NULL;
    h = hkey(f->seed, channel, client);
    for (e = f->obk[h & (f->nbk - 1)]; e != NULL; e = e->onext)
        if (e->ohash == h && e->channel == channel && memcmp(&e->client, client, sizeof *client) == 0)
            return e;
    return NULL;
}

static entry *
find_in(Forwarder *f, int fd, const akey *peer)
{
    uint64_t h;
    entry *e;
    if (f->count == 0)
        return NULL;
    h = hkey(f->seed, 0x100000000ULL + (uint64_t)(uint32_t)fd, peer);
    for (e = f->ibk[h & (f->nbk - 1)]; e != NULL; e = e->inext)
        if (e->ihash == h && e->relay_fd == fd && memcmp(&e->peer, peer, sizeof *peer) == 0)
            return e;
    return NULL;
}

/* Ports data may use with the peer `k` through slot `s` (Allocation.port_range), or NULL:
 * no permission (or a scoped IPv6 address, which no permission names). */
static const perm_t *
find_perm(const slot_t *s, const akey *k)
{
    size_t i, n = k->b[0] == 4 ? 4 : 16;
    static const unsigned char noscope[4] = {0, 0, 0, 0};
    if (k->b[0] == 6 && memcmp(k->b + 20, noscope, 4) != 0)
        return NULL;
    for (i = 0; i < s->nperms; i++)
        if (memcmp(s->perms[i].ip, k->b + 4, n) == 0)
            return &s->perms[i];
    return NULL;
}

static int
permits(const slot_t *s, const akey *k)
{
    const perm_t *p = find_perm(s, k);
    unsigned int port = (unsigned int)k->b[2] << 8 | k->b[3];
    return p != NULL && p->lo <= port && port <= p->hi;
}

/* ---- slots, handles and the client table ---------------------------------------------------- */

/* The handle Python holds for a slot or a connection: it names one open() or attach(), so a
 * handle (or a datagram handed back with it) from before a close never matches what reuses
 * the index or the fd. */
static uint64_t
handle_of(uint64_t gen, size_t index)
{
    return gen << SLOT_BITS | (uint64_t)index;
}

static int
parse_handle(PyObject *arg, uint64_t *gen, size_t *index)
{
    unsigned long long h = PyLong_AsUnsignedLongLong(arg);
    if (h == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        h = 0; /* negative or too big: no such handle (generations start at 1) */
    }
    *index = (size_t)(h & ((1ULL << SLOT_BITS) - 1));
    *gen = h >> SLOT_BITS;
    return 0;
}

/* The element of base[0..n) (each `stride` bytes, a live_t first) the handle `arg` names
 * while that use lasts, or NULL with a KeyError. */
static void *
lookup(PyObject *arg, void *base, size_t n, size_t stride, const char *what)
{
    uint64_t gen;
    size_t i;
    live_t *e;
    if (parse_handle(arg, &gen, &i) < 0)
        return NULL;
    e = i < n ? (live_t *)((char *)base + i * stride) : NULL;
    if (e == NULL || !e->used || e->gen != gen) {
        PyErr_Format(PyExc_KeyError, "no such %s", what);
        return NULL;
    }
    return e;
}

static uint64_t
slot_handle(Forwarder *f, const slot_t *s)
{
    return handle_of(s->live.gen, (size_t)(s - f->slots));
}

static uint64_t
conn_handle(Forwarder *f, const conn_t *c)
{
    return handle_of(c->live.gen, (size_t)(c - f->conns));
}

static slot_t *
get_slot(Forwarder *f, PyObject *arg)
{
    return lookup(arg, f->slots, f->nslots, sizeof(slot_t), "slot");
}

static conn_t *
get_conn(Forwarder *f, PyObject *arg)
{
    return lookup(arg, f->conns, f->nconns, sizeof(conn_t), "stream");
}

/* The connection a stream client's slot writes to, if it is still the one it was opened for. */
static conn_t *
conn_of(Forwarder *f, const slot_t *s)
{
    conn_t *c;
    if (!s->conn || s->conn > f->nconns)
        return NULL;
    c = &f->conns[s->conn - 1];
    return c->live.used && c->live.gen == s->conn_gen ? c : NULL;
}

/* The slot that holds an allocation's buckets (the first of a dual allocation). */
static slot_t *
bucket_of(Forwarder *f, slot_t *s)
{
    return s->primary || !s->sibling ? s : &f->slots[s->sibling - 1];
}

/* The relay of the allocation whose primary slot is `p` for a peer of `family`. */
static slot_t *
relay_for(Forwarder *f, slot_t *p, int family)
{
    if (p->family == family)
        return p;
    if (p->sibling && f->slots[p->sibling - 1].family == family)
        return &f->slots[p->sibling - 1];
    return NULL;
}

static void
ctable_insert(Forwarder *f, size_t idx)
{
    slot_t *s = &f->slots[idx];
    size_t b = s->chash & (f->ncbk - 1);
    s->cnext = f->cbk[b];
    f->cbk[b] = (uint32_t)idx + 1;
}

static void
ctable_remove(Forwarder *f, size_t idx)
{
    slot_t *s = &f->slots[idx];
    uint32_t *pp = &f->cbk[s->chash & (f->ncbk - 1)];
    while (*pp && *pp != idx + 1)
        pp = &f->slots[*pp - 1].cnext;
    if (*pp == idx + 1)
        *pp = s->cnext;
    s->cnext = 0;
}

static slot_t *
find_client(Forwarder *f, const akey *client)
{
    uint64_t h;
    uint32_t i;
    if (f->ncbk == 0)
        return NULL;
    h = hkey(f->seed, 0x200000000ULL, client);
    for (i = f->cbk[h & (f->ncbk - 1)]; i; i = f->slots[i - 1].cnext) {
        slot_t *s = &f->slots[i - 1];
        if (s->chash == h && memcmp(&s->client, client, sizeof *client) == 0)
            return s;
    }
    return NULL;
}

/* Room for one more slot (and a client table at least as big as the slot array). */
static int
reserve_slot(Forwarder *f)
{
    size_t i;
    if (f->nfree || f->nslots < f->cap)
        return 0;
    {
        size_t cap = f->cap ? f->cap * 2 : 16;
        slot_t *ns = PyMem_Realloc(f->slots, cap * sizeof *ns);
        uint32_t *nf, *nb;
        if (ns == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->slots = ns;
        nf = PyMem_Realloc(f->freel, cap * sizeof *nf);
        if (nf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->freel = nf;
        nb = PyMem_Calloc(cap, sizeof *nb);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyMem_Free(f->cbk);
        f->cbk = nb;
        f->ncbk = cap;
        f->cap = cap;
        for (i = 0; i < f->nslots; i++) /* rehash the client table */
            if (f->slots[i].live.used && f->slots[i].primary && f->slots[i].via_fd >= 0)
                ctable_insert(f, i);
    }
    return 0;
}

static size_t
take_slot(Forwarder *f)
{
    return f->nfree ? f->freel[--f->nfree] : f->nslots++;
}

/* ---- sending ---------------------------------------------------------------------------- */

/* Send m[0..n-1] on fd. A full buffer drops the rest, any other error drops only the datagram
 * it concerns: UDP may lose datagrams, the relay must never stall or spin. */
static void
send_all(int fd, struct mmsghdr *m, unsigned int n)
{
    unsigned int sent = 0;
    while (sent < n) {
        int r = sendmmsg(fd, m + sent, n - sent, MSG_DONTWAIT);
        if (r > 0) {
            sent += (unsigned int)r;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            return;
        } else {
            sent++;
        }
    }
}

/* Client -> peer datagrams staged for one sendmmsg (on one relay socket). */
static void
stage_flush(Forwarder *f, stage_t *st)
{
    if (st->n)
        send_all(st->fd, f->smsg, st->n);
    st->n = 0;
}

static void
stage_add(Forwarder *f, stage_t *st, int fd, const unsigned char *data, size_t len,
          const struct sockaddr_storage *sa, socklen_t salen)
{
    if (st->n && (st->fd != fd || st->n == BATCH))
        stage_flush(f, st);
    st->fd = fd;
    f->siov[st->n].iov_base = (void *)data;
    f->siov[st->n].iov_len = len;
    memcpy(&f->sname[st->n], sa, (size_t)salen);
    f->smsg[st->n].msg_hdr.msg_namelen = salen;
    st->n++;
}

static void
flush_down(Forwarder *f)
{
    if (f->tw)
        send_all(f->tfd, f->tmsg, f->tw);
    f->tw = 0;
}

/* epoll interest of a connection: EPOLLOUT only while output waits. */
static void
want_out(Forwarder *f, conn_t *c, int on)
{
    struct epoll_event ev;
    if (c->want_out == on)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.fd = c->fd;
    if (epoll_ctl(f->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = on;
}

/* Write what a connection holds; 0, or -1 when the stream broke (then marked dead). */
static int
conn_flush(Forwarder *f, conn_t *c)
{
    while (c->outlen > c->outoff) {
        ssize_t r = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            c->outoff += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            c->dead = 1;
            c->outoff = c->outlen = 0;
            want_out(f, c, 0);
            return -1;
        }
    }
    if (c->outoff == c->outlen) {
        c->outoff = c->outlen = 0;
        PyMem_RawFree(c->out); /* an idle client holds no buffer (thousands may be open) */
        c->out = NULL;
        c->outcap = 0;
        want_out(f, c, 0);
    } else {
        want_out(f, c, 1);
    }
    return 0;
}

/* Append to a connection's output. -1: out of memory or over STREAM_OUT_MAX (dead). */
static int
conn_queue(Forwarder *f, conn_t *c, const unsigned char *data, size_t len)
{
    size_t need;
    (void)f;
    if (c->dead)
        return -1;
    if (c->outoff && c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    need = c->outlen + len;
    if (need - c->outoff > STREAM_OUT_MAX) {
        c->dead = 1;
        return -1;
    }
    if (need > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        unsigned char *p;
        if (c->outoff) { /* reclaim what was written before growing */
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
            need = c->outlen + len;
        }
        while (cap < need)
            cap *= 2;
        if (cap > c->outcap) {
            p = PyMem_RawRealloc(c->out, cap);
            if (p == NULL) {
                c->dead = 1;
                return -1;
            }
            c->out = p;
            c->outcap = cap;
        }
    }
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
    return 0;
}

static void
mark_dirty(Forwarder *f, conn_t *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        f->dirty[f->ndirty++] = (uint32_t)(c - f->conns);
    }
}

/* ---- handing back to Python --------------------------------------------------------------- */

/* (fd, handle, data, key, raw): something for Python's slow path.
 *   a UDP listener: handle 0, data a datagram, key how turn/native.py keys the client address
 *     (the first 8 sockaddr bytes as a native integer for IPv4, the raw bytes for IPv6), raw
 *     the sockaddr;
 *   a relay socket: handle the slot's (Python drops the datagram unless it is still the one
 *     of the allocation now on that fd), data, key and raw of the peer;
 *   a stream: handle the connection's, data a whole frame, key and raw None; data None: the
 *     stream is closed (EOF, error, garbage).
 * (fd, 0, None, None, None): an fd this Forwarder does not know. */
static int
hand_back(PyObject **list, int fd, uint64_t handle, const unsigned char *data, size_t len,
          const struct sockaddr_storage *sa, socklen_t salen)
{
    PyObject *item, *fdo, *ho;
    if (*list == NULL && (*list = PyList_New(0)) == NULL)
        return -1;
    if ((item = PyTuple_New(5)) == NULL)
        return -1;
    if ((fdo = PyLong_FromLong(fd)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(item, 0, fdo);
    if ((ho = PyLong_FromUnsignedLongLong(handle)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(item, 1, ho);
    if (data == NULL) {
        PyTuple_SET_ITEM(item, 2, Py_NewRef(Py_None));
    } else {
        PyObject *d = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
        if (d == NULL)
            goto fail;
        PyTuple_SET_ITEM(item, 2, d);
    }
    if (sa == NULL) {
        PyTuple_SET_ITEM(item, 3, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(item, 4, Py_NewRef(Py_None));
    } else {
        PyObject *raw, *key;
        if (salen > (socklen_t)sizeof(*sa))
            salen = (socklen_t)sizeof(*sa);
        if ((raw = PyBytes_FromStringAndSize((const char *)sa, (Py_ssize_t)salen)) == NULL)
            goto fail;
        PyTuple_SET_ITEM(item, 4, raw);
        if (sa->ss_family == AF_INET && salen >= 8) {
            unsigned long long q;
            memcpy(&q, sa, 8);
            if ((key = PyLong_FromUnsignedLongLong(q)) == NULL)
                goto fail;
        } else {
            key = Py_NewRef(raw);
        }
        PyTuple_SET_ITEM(item, 3, key);
    }
    if (PyList_Append(*list, item) < 0)
        goto fail;
    Py_DECREF(item);
    return 0;
fail:
    Py_DECREF(item); /* a tuple with NULL slots is safe to release */
    return -1;
}

static int
report_closed(Forwarder *f, conn_t *c, PyObject **misses)
{
    if (c->reported)
        return 0;
    c->reported = 1;
    return hand_back(misses, c->fd, conn_handle(f, c), NULL, 0, NULL, 0);
}

/* ---- Send indications (client -> peer) ------------------------------------------------------ */

/* A Send indication in d[0..n): the peer it names and its DATA, exactly as codec.parse and
 * TurnServer._send_indication read it (the first XOR-PEER-ADDRESS and DATA before any
 * MESSAGE-INTEGRITY; a FINGERPRINT, if any, last and right). 1: read; 0: not one of those
 * (other STUN, malformed, an attribute missing): Python's to decide. */
static int
parse_send(const unsigned char *d, size_t n, struct sockaddr_storage *sa, socklen_t *salen,
           akey *k, const unsigned char **data, size_t *dlen)
{
    const unsigned char *xp = NULL, *dat = NULL;
    size_t pos = 20, xlen = 0, dl = 0, length;
    unsigned int port;
    int after_mi = 0;
    if (n < 20 || d[0] != 0x00 || d[1] != 0x16)
        return 0;
    length = (size_t)d[2] << 8 | d[3];
    if (length & 3 || length + 20 != n || memcmp(d + 4, COOKIE, 4) != 0)
        return 0;
    while (pos < n) {
        unsigned int at, alen;
        size_t vstart, next;
        if (pos + 4 > n)
            return 0;
        at = (unsigned int)d[pos] << 8 | d[pos + 1];
        alen = (unsigned int)d[pos + 2] << 8 | d[pos + 3];
        vstart = pos + 4;
        next = vstart + ((alen + 3) & ~3u);
        if (next > n)
            return 0;
        if (at == 0x8028) { /* FINGERPRINT */
            uint32_t want;
            if (alen != 4 || next != n)
                return 0;
            want = (uint32_t)d[vstart] << 24 | (uint32_t)d[vstart + 1] << 16
                   | (uint32_t)d[vstart + 2] << 8 | d[vstart + 3];
            if ((crc32(d, pos) ^ 0x5354554Eu) != want)
                return 0;
        } else if (!after_mi) {
            if (at == 0x0008) { /* MESSAGE-INTEGRITY: what follows is not read */
                if (alen != 20)
                    return 0;
                after_mi = 1;
            } else if (at == 0x0012 && xp == NULL) {
                xp = d + vstart;
                xlen = alen;
            } else if (at == 0x0013 && dat == NULL) {
                dat = d + vstart;
                dl = alen;
            }
        }
        pos = next;
    }
    if (xp == NULL || dat == NULL || xlen < 4)
        return 0;
    port = ((unsigned int)xp[2] << 8 | xp[3]) ^ 0x2112;
    memset(sa, 0, sizeof *sa);
    if (xp[1] == 1 && xlen == 8) {
        struct sockaddr_in *s = (struct sockaddr_in *)sa;
        unsigned char *a = (unsigned char *)&s->sin_addr;
        int i;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        for (i = 0; i < 4; i++)
            a[i] = xp[4 + i] ^ COOKIE[i];
        *salen = (socklen_t)sizeof(struct sockaddr_in);
    } else if (xp[1] == 2 && xlen == 20) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)sa;
        unsigned char *a = (unsigned char *)&s->sin6_addr;
        int i;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)port);
        for (i = 0; i < 16; i++)
            a[i] = xp[4 + i] ^ (i < 4 ? COOKIE[i] : d[8 + i - 4]);
        *salen = (socklen_t)sizeof(struct sockaddr_in6);
    } else {
        return 0;
    }
    canon(sa, *salen, k);
    *data = dat;
    *dlen = dl;
    return 1;
}

/* The Send indication d[0..n) of the client whose allocation's primary slot is `p`: staged
 * for its peer (1), dropped over the rate (1), or 0: Python decides (not a well-formed Send
 * indication, no relay of the peer's family, no permission). */
static int
fast_send(Forwarder *f, slot_t *p, const unsigned char *d, size_t n, stage_t *st)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    akey k;
    const unsigned char *data;
    size_t dlen;
    slot_t *s, *b;
    if (p == NULL || !parse_send(d, n, &sa, &salen, &k, &data, &dlen))
        return 0;
    s = relay_for(f, p, k.b[0] == 4 ? AF_INET : AF_INET6);
    if (s == NULL || !permits(s, &k))
        return 0;
    b = bucket_of(f, s);
    if (b->limited) {
        if (b->up < (double)dlen)
            return 1;
        b->up -= (double)dlen;
    }
    s->pk_out++;
    s->by_out += dlen;
    stage_add(f, st, s->relay_fd, data, dlen, &sa, salen);
    return 1;
}

/* ---- frames for the client (peer -> client) --------------------------------------------- */

/* Build, in place around the payload d[HEAD..HEAD+len), the frame slot `s`'s client gets for a
 * datagram from `peer` (Allocation.channel_in): ChannelData when the peer has a bound channel
 * (padded to 4 for a TCP client), else a Data indication when it has a permission. Returns
 * the frame's offset in d and sets *flen; -1: not C's to decide (no channel and no
 * permission, or too big for a frame): Python's. */
static long
frame_for_client(Forwarder *f, int fd, slot_t *s, unsigned char *d, size_t len,
                 const akey *peer, size_t *flen)
{
    entry *e = find_in(f, fd, peer);
    int stream = s->via_fd < 0;
    size_t pad = stream ? (size_t)(-(long)len & 3) : 0;
    if (e != NULL && len <= MAX_UDP - 4) {
        unsigned char *o = d + HEAD - 4;
        o[0] = (unsigned char)(e->channel >> 8);
        o[1] = (unsigned char)(e->channel & 0xFF);
        o[2] = (unsigned char)(len >> 8);
        o[3] = (unsigned char)(len & 0xFF);
        if (pad)
            memset(d + HEAD + len, 0, pad);
        *flen = 4 + len + pad;
        return HEAD - 4;
    }
    if (!permits(s, peer))
        return -1;
    {
        int v6 = peer->b[0] == 6;
        size_t hdr = v6 ? 48 : 36, alen = v6 ? 20 : 8, body;
        unsigned char *o = d + HEAD - hdr;
        uint64_t r1 = next_random(f), r2 = next_random(f);
        unsigned int xport = ((unsigned int)peer->b[2] << 8 | peer->b[3]) ^ 0x2112;
        size_t i;
        pad = (size_t)(-(long)len & 3);
        if (hdr + len + pad > MAX_UDP)
            return -1;
        body = hdr - 20 + len + pad;
        o[0] = 0x00;
        o[1] = 0x17; /* Data indication */
        o[2] = (unsigned char)(body >> 8);
        o[3] = (unsigned char)(body & 0xFF);
        memcpy(o + 4, COOKIE, 4);
        memcpy(o + 8, &r1, 8);
        memcpy(o + 16, &r2, 4);
        o[20] = 0x00;
        o[21] = 0x12; /* XOR-PEER-ADDRESS */
        o[22] = 0;
        o[23] = (unsigned char)alen;
        o[24] = 0;
        o[25] = v6 ? 2 : 1;
        o[26] = (unsigned char)(xport >> 8);
        o[27] = (unsigned char)(xport & 0xFF);
        for (i = 0; i < (v6 ? 16u : 4u); i++)
            o[28 + i] = peer->b[4 + i] ^ (i < 4 ? COOKIE[i] : o[8 + i - 4]);
        o[hdr - 4] = 0x00;
        o[hdr - 3] = 0x13; /* DATA */
        o[hdr - 2] = (unsigned char)(len >> 8);
        o[hdr - 1] = (unsigned char)(len & 0xFF);
        if (pad)
            memset(d + HEAD + len, 0, pad);
        *flen = hdr + len + pad;
        return (long)(HEAD - hdr);
    }
}

/* ---- the hot loops ---------------------------------------------------------------------- */

/* Client -> peer on a UDP listener: ChannelData on a bound channel and Send indications to a
 * permitted peer go out of their relay socket. */
static int
drain_listener(Forwarder *f, int lfd, PyObject **misses)
{
    int round, i, n;
    for (round = 0; round < LISTENER_ROUNDS; round++) {
        stage_t st = {-1, 0};
        for (i = 0; i < BATCH; i++) {
            f->rmsg[i].msg_hdr.msg_namelen = sizeof(f->rname[i]);
            f->rmsg[i].msg_hdr.msg_flags = 0;
        }
        n = recvmmsg(lfd, f->rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return 0;
        for (i = 0; i < n; i++) {
            const unsigned char *d = f->rbuf + (size_t)i * SLOT;
            size_t len = f->rmsg[i].msg_len;
            struct msghdr *h = &f->rmsg[i].msg_hdr;
            unsigned int channel, cl;
            akey client;
            entry *e;
            slot_t *s, *b;
            if (h->msg_flags & MSG_TRUNC || len > SLOT)
                continue; /* cannot be a valid STUN/TURN message */
            if (len < 4 || canon(&f->rname[i], h->msg_namelen, &client) < 0)
                goto slow;
            if ((d[0] & 0xC0) != 0x40) {
                if (d[0] == 0x00 && d[1] == 0x16
                    && fast_send(f, find_client(f, &client), d, len, &st))
                    continue;
                goto slow;
            }
            channel = (unsigned int)d[0] << 8 | d[1];
            e = find_out(f, &client, channel);
            if (e == NULL)
                goto slow;
            cl = (unsigned int)d[2] << 8 | d[3];
            if ((size_t)cl + 4 > len)
                continue; /* length beyond the datagram: dropped, as the Python path does */
            s = &f->slots[e->slot];
            b = bucket_of(f, s);
            if (b->limited) {
                if (b->up < cl)
                    continue;
                b->up -= cl;
            }
            s->pk_out++;
            s->by_out += cl;
            stage_add(f, &st, e->relay_fd, d + 4, cl, &e->peer_sa, e->peer_len);
            continue;
        slow:
            if (len > 0 && hand_back(misses, lfd, 0, d, len, &f->rname[i], h->msg_namelen) < 0) {
                stage_flush(f, &st);
                return -1;
            }
        }
        stage_flush(f, &st);
        if (n < BATCH)
            return 0;
    }
    return 0;
}

/* Peer -> client: a routed or permitted peer's datagram becomes the client's frame, queued
 * for one sendmmsg on the client's listener, or added to the client's stream output. */
static int
drain_relay(Forwarder *f, int fd, slot_t *s, PyObject **misses)
{
    unsigned int w, j, end, first;
    int n, stream = s->via_fd < 0;
    conn_t *c = stream ? conn_of(f, s) : NULL;
    slot_t *b = bucket_of(f, s);
    if (f->tw == BATCH || (f->tw && !stream && f->tfd != s->via_fd))
        flush_down(f);
    first = w = f->tw;
    for (j = w; j < BATCH; j++) {
        f->trmsg[j].msg_hdr.msg_namelen = sizeof(f->tname[j]);
        f->trmsg[j].msg_hdr.msg_flags = 0;
    }
    n = recvmmsg(fd, f->trmsg + w, BATCH - w, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    end = w + (unsigned int)n;
    for (j = first; j < end; j++) {
        unsigned char *d = f->tbuf + (size_t)j * SLOT;
        size_t len = f->trmsg[j].msg_len, flen;
        struct msghdr *h = &f->trmsg[j].msg_hdr;
        akey peer;
        long off;
        if (h->msg_flags & MSG_TRUNC || len > SLOT - HEAD - 4)
            continue;
        if (canon(&f->tname[j], h->msg_namelen, &peer) < 0)
            continue;
        if (stream && (c == NULL || c->dead || c->outlen - c->outoff > STREAM_BACKLOG))
            continue; /* a slow TCP client loses datagrams, as UDP would */
        off = frame_for_client(f, fd, s, d, len, &peer, &flen);
        if (off < 0) {
            if (hand_back(misses, fd, slot_handle(f, s), d + HEAD, len,
                          &f->tname[j], h->msg_namelen) < 0)
                return -1;
            continue;
        }
        if (b->limited) {
            if (b->down < (double)len)
                continue;
            b->down -= (double)len;
        }
        s->pk_in++;
        s->by_in += len;
        if (stream) {
            if (conn_queue(f, c, d + off, flen) == 0)
                mark_dirty(f, c);
            continue;
        }
        {
            unsigned char *o = f->tbuf + (size_t)w * SLOT;
            if (w != j)
                memmove(o + off, d + off, flen); /* close the gap left by earlier misses */
            f->tiov[w].iov_base = o + off;
            f->tiov[w].iov_len = flen;
            f->tmsg[w].msg_hdr.msg_name = &s->client_sa;
            f->tmsg[w].msg_hdr.msg_namelen = s->client_len;
            f->tfd = s->via_fd;
            w++;
        }
    }
    f->tw = w;
    return 0;
}

/* Length of the stream frame at p[0..avail) (codec.stream_frame_length): 0 if more bytes
 * are needed, -1 if the stream is garbage. */
static long
frame_length(const unsigned char *p, size_t avail)
{
    unsigned int length, first;
    size_t n;
    if (avail < 4)
        return 0;
    first = p[0] & 0xC0;
    length = (unsigned int)p[2] << 8 | p[3];
    if (first == 0) {
        if (length & 3)
            return -1;
        if (avail < 8)
            return 0;
        if (memcmp(p + 4, COOKIE, 4) != 0)
            return -1;
        n = 20 + length;
    } else if (first == 0x40) {
        n = 4 + ((length + 3) & ~3u);
    } else {
        return -1;
    }
    return avail < n ? 0 : (long)n;
}

/* The whole frames of buf[0..avail) from connection `c`: forwarded, or handed back; what is
 * left (an incomplete frame) is moved to the front of buf. Returns its length, or -1 on a
 * Python error. */
static long
stream_frames(Forwarder *f, conn_t *c, unsigned char *buf, size_t avail, PyObject **misses)
{
    size_t pos = 0;
    stage_t st = {-1, 0};
    uint64_t handle = conn_handle(f, c);
    slot_t *p = c->slot ? &f->slots[c->slot - 1] : NULL;
    while (!c->dead) {
        const unsigned char *fr = buf + pos;
        long n = frame_length(fr, avail - pos);
        if (n == 0)
            break;
        if (n < 0) {
            c->dead = 1; /* not STUN/TURN framing: stop reading garbage */
            break;
        }
        pos += (size_t)n;
        if ((fr[0] & 0xC0) == 0x40) {
            unsigned int channel = (unsigned int)fr[0] << 8 | fr[1];
            unsigned int cl = (unsigned int)fr[2] << 8 | fr[3];
            entry *e = find_out(f, &c->key, channel);
            if (e != NULL) {
                slot_t *s = &f->slots[e->slot], *b = bucket_of(f, s);
                if (b->limited) {
                    if (b->up < cl)
                        continue;
                    b->up -= cl;
                }
                s->pk_out++;
                s->by_out += cl;
                stage_add(f, &st, e->relay_fd, fr + 4, cl, &e->peer_sa, e->peer_len);
                continue;
            }
        } else if (fr[1] == 0x16 && fast_send(f, p, fr, (size_t)n, &st)) {
            continue;
        }
        if (hand_back(misses, c->fd, handle, fr, (size_t)n, NULL, 0) < 0) {
            stage_flush(f, &st);
            return -1;
        }
    }
    stage_flush(f, &st);
    if (c->dead)
        return 0;
    memmove(buf, buf + pos, avail - pos);
    return (long)(avail - pos);
}

/* Keep the incomplete frame at buf[0..keep) for the next read. */
static int
stream_keep(conn_t *c, const unsigned char *buf, size_t keep)
{
    if (keep == 0) {
        PyMem_RawFree(c->in);
        c->in = NULL;
        c->inlen = 0;
        return 0;
    }
    if (keep != c->inlen || c->in == NULL) {
        unsigned char *p = PyMem_RawRealloc(c->in, keep);
        if (p == NULL) {
            c->dead = 1;
            return -1;
        }
        c->in = p;
    }
    memmove(c->in, buf, keep);
    c->inlen = keep;
    return 0;
}

/* Client -> peer on a TCP connection: read, frame, forward. */
static int
drain_stream(Forwarder *f, conn_t *c, PyObject **misses)
{
    unsigned char *buf = f->sbuf;
    size_t keep = c->inlen;
    int round;
    long left;
    if (c->dead)
        return report_closed(f, c, misses);
    if (keep)
        memcpy(buf, c->in, keep);
    if (c->pending) {
        c->pending = 0;
        f->npending--;
        if ((left = stream_frames(f, c, buf, keep, misses)) < 0)
            return -1;
        keep = (size_t)left;
    }
    for (round = 0; round < STREAM_ROUNDS && !c->dead; round++) {
        ssize_t r = recv(c->fd, buf + keep, STREAM_READ, MSG_DONTWAIT);
        if (r == 0) {
            c->dead = 1;
            break;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = 1;
            break;
        }
        if ((left = stream_frames(f, c, buf, keep + (size_t)r, misses)) < 0)
            return -1;
        keep = (size_t)left;
        if ((size_t)r < STREAM_READ)
            break;
    }
    if (!c->dead)
        stream_keep(c, buf, keep);
    if (c->dead)
        return report_closed(f, c, misses);
    return 0;
}

/* ---- the Python type ---------------------------------------------------------------------- */

static int
Forwarder_init(Forwarder *f, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"epoll_fd", NULL};
    int epfd, i;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &epfd))
        return -1;
    if (epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "bad epoll fd");
        return -1;
    }
    if (f->rbuf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    f->epfd = epfd;
    /* A secret hash seed: an authenticated client picks its channel numbers and peer ports,
     * and with a known seed could choose them to share one chain (a slow lookup per packet). */
    if (getrandom(&f->seed, sizeof f->seed, GRND_NONBLOCK) != (ssize_t)sizeof f->seed
        || getrandom(f->rng, sizeof f->rng, GRND_NONBLOCK) != (ssize_t)sizeof f->rng) {
        PyErr_SetString(PyExc_OSError, "getrandom failed");
        return -1;
    }
    f->seed |= 1;
    f->rng[0] |= 1;
    /* calloc of this size maps fresh pages: only the slots datagrams fill become resident */
    f->rbuf = PyMem_RawCalloc(BATCH, SLOT);
    f->tbuf = PyMem_RawCalloc(BATCH, SLOT);
    f->sbuf = PyMem_RawMalloc(STREAM_MAX_FRAME + STREAM_READ);
    if (f->rbuf == NULL || f->tbuf == NULL || f->sbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < BATCH; i++) {
        f->riov[i].iov_base = f->rbuf + (size_t)i * SLOT;
        f->riov[i].iov_len = SLOT;
        f->rmsg[i].msg_hdr.msg_name = &f->rname[i];
        f->rmsg[i].msg_hdr.msg_iov = &f->riov[i];
        f->rmsg[i].msg_hdr.msg_iovlen = 1;
        f->smsg[i].msg_hdr.msg_name = &f->sname[i];
        f->smsg[i].msg_hdr.msg_iov = &f->siov[i];
        f->smsg[i].msg_hdr.msg_iovlen = 1;
        f->triov[i].iov_base = f->tbuf + (size_t)i * SLOT + HEAD;
        f->triov[i].iov_len = SLOT - HEAD - 4;
        f->trmsg[i].msg_hdr.msg_name = &f->tname[i];
        f->trmsg[i].msg_hdr.msg_iov = &f->triov[i];
        f->trmsg[i].msg_hdr.msg_iovlen = 1;
        f->tmsg[i].msg_hdr.msg_iov = &f->tiov[i];
        f->tmsg[i].msg_hdr.msg_iovlen = 1;
    }
    return grow(f);
}

static void
free_conn(conn_t *c)
{
    PyMem_RawFree(c->in);
    PyMem_RawFree(c->out);
    c->in = c->out = NULL;
    c->inlen = c->outlen = c->outoff = c->outcap = 0;
}

static void
Forwarder_dealloc(Forwarder *f)
{
    size_t i;
    for (i = 0; i < f->nslots; i++) {
        entry *e = f->slots[i].entries, *next;
        for (; e != NULL; e = next) {
            next = e->snext;
            PyMem_Free(e);
        }
        PyMem_Free(f->slots[i].perms);
    }
    for (i = 0; i < f->nconns; i++)
        free_conn(&f->conns[i]);
    PyMem_Free(f->slots);
    PyMem_Free(f->freel);
    PyMem_Free(f->cbk);
    PyMem_Free(f->conns);
    PyMem_Free(f->cfree);
    PyMem_Free(f->dirty);
    PyMem_Free(f->fdmap);
    PyMem_Free(f->obk);
    PyMem_Free(f->ibk);
    PyMem_RawFree(f->rbuf);
    PyMem_RawFree(f->tbuf);
    PyMem_RawFree(f->sbuf);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static int
ready(Forwarder *f)
{
    if (f->rbuf == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Forwarder not initialised");
        return -1;
    }
    if (f->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Forwarder is in use (re-entrant call)");
        return -1;
    }
    return 0;
}

static PyObject *
Forwarder_listen(Forwarder *f, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (ready(f) < 0)
        return NULL;
    if (f->nlfds == MAX_LISTENERS) {
        PyErr_SetString(PyExc_ValueError, "too many listeners");
        return NULL;
    }
    if (fd < 0 || fd > INT32_MAX || fd_reserve(f, (int)fd) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "bad fd");
        return NULL;
    }
    f->lfds[f->nlfds++] = (int)fd;
    f->fdmap[fd] = KIND_LISTENER << KIND_SHIFT | (uint32_t)f->nlfds;
    Py_RETURN_NONE;
}

/* The partner argument of open()/open_stream(): NULL for none (not an error), else the
 * primary slot of the allocation a second relay (the other address family) joins. */
static int
get_partner(Forwarder *f, PyObject *arg, slot_t **partner)
{
    *partner = NULL;
    if (arg == NULL || arg == Py_None)
        return 0;
    if ((*partner = get_slot(f, arg)) == NULL)
        return -1;
    if (!(*partner)->primary || (*partner)->sibling) {
        PyErr_SetString(PyExc_ValueError, "partner already has two relays");
        return -1;
    }
    return 0;
}

/* A new slot for relay socket `fd`, its family from the socket itself, linked to `partner`
 * (may be NULL). */
static slot_t *
new_slot(Forwarder *f, int fd, slot_t *partner)
{
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    size_t idx, pidx = partner != NULL ? (size_t)(partner - f->slots) : 0;
    slot_t *s;
    if (fd_reserve(f, fd) < 0)
        return NULL;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0
        || (local.ss_family != AF_INET && local.ss_family != AF_INET6)) {
        PyErr_SetString(PyExc_ValueError, "relay fd is not a bound IPv4/IPv6 socket");
        return NULL;
    }
    if (partner != NULL && partner->family == local.ss_family) {
        PyErr_SetString(PyExc_ValueError, "partner relay has the same family");
        return NULL;
    }
    if (reserve_slot(f) < 0)
        return NULL;
    idx = take_slot(f);
    s = &f->slots[idx];
    memset(s, 0, sizeof *s);
    s->live.used = 1;
    s->live.gen = ++f->opens;
    s->relay_fd = fd;
    s->family = local.ss_family;
    s->via_fd = -1;
    s->primary = partner == NULL;
    if (partner != NULL) {
        s->sibling = (uint32_t)pidx + 1;
        f->slots[pidx].sibling = (uint32_t)idx + 1; /* (the array may have moved) */
    }
    f->fdmap[fd] = KIND_SLOT << KIND_SHIFT | ((uint32_t)idx + 1);
    return s;
}

static PyObject *
Forwarder_open(Forwarder *f, PyObject *args)
{
    int fd, lfd;
    PyObject *client, *partner_arg = NULL;
    struct sockaddr_storage sa;
    socklen_t len;
    akey k;
    slot_t *s, *partner;
    if (!PyArg_ParseTuple(args, "iiO!|O:open", &fd, &lfd, &PyBytes_Type, &client, &partner_arg))
        return NULL;
    if (ready(f) < 0 || sa_from_bytes(client, &sa, &len, &k) < 0
        || get_partner(f, partner_arg, &partner) < 0)
        return NULL;
    if (fd_lookup(f, lfd) >> KIND_SHIFT != KIND_LISTENER) {
        PyErr_SetString(PyExc_ValueError, "not a listener of this forwarder");
        return NULL;
    }
    if (partner == NULL ? find_client(f, &k) != NULL
                        : partner->via_fd != lfd || memcmp(&partner->client, &k, sizeof k) != 0) {
        PyErr_SetString(PyExc_ValueError, partner == NULL ? "client already has an allocation"
                                                          : "partner relay serves another client");
        return NULL;
    }
    if ((s = new_slot(f, fd, partner)) == NULL)
        return NULL;
    s->client = k;
    s->client_sa = sa;
    s->client_len = len;
    s->via_fd = lfd;
    s->chash = hkey(f->seed, 0x200000000ULL, &k);
    if (s->primary)
        ctable_insert(f, (size_t)(s - f->slots));
    return PyLong_FromUnsignedLongLong(slot_handle(f, s));
}

static PyObject *
Forwarder_open_stream(Forwarder *f, PyObject *args)
{
    int fd;
    PyObject *conn_arg, *partner_arg = NULL;
    conn_t *c;
    slot_t *s, *partner;
    if (!PyArg_ParseTuple(args, "iO|O:open_stream", &fd, &conn_arg, &partner_arg))
        return NULL;
    if (ready(f) < 0 || (c = get_conn(f, conn_arg)) == NULL
        || get_partner(f, partner_arg, &partner) < 0)
        return NULL;
    if (partner == NULL ? c->slot != 0 : conn_of(f, partner) != c) {
        PyErr_SetString(PyExc_ValueError, partner == NULL ? "stream already has an allocation"
                                                          : "partner relay serves another client");
        return NULL;
    }
    if ((s = new_slot(f, fd, partner)) == NULL)
        return NULL;
    s->client = c->key;
    s->conn = (uint32_t)(c - f->conns) + 1;
    s->conn_gen = c->live.gen;
    if (s->primary)
        c->slot = (uint32_t)(s - f->slots) + 1;
    return PyLong_FromUnsignedLongLong(slot_handle(f, s));
}

static PyObject *
counters(slot_t *s)
{
    PyObject *r = Py_BuildValue("(KKKK)", s->pk_out, s->by_out, s->pk_in, s->by_in);
    if (r != NULL)
        s->pk_out = s->by_out = s->pk_in = s->by_in = 0;
    return r;
}

static PyObject *
Forwarder_close(Forwarder *f, PyObject *arg)
{
    slot_t *s;
    PyObject *r;
    size_t idx;
    if (ready(f) < 0 || (s = get_slot(f, arg)) == NULL)
        return NULL;
    if ((r = counters(s)) == NULL)
        return NULL;
    idx = (size_t)(s - f->slots);
    clear_routes(f, s);
    PyMem_Free(s->perms);
    s->perms = NULL;
    s->nperms = 0;
    if (s->primary) {
        slot_t *sib = s->sibling ? &f->slots[s->sibling - 1] : NULL;
        conn_t *c = conn_of(f, s);
        if (s->via_fd >= 0)
            ctable_remove(f, idx);
        if (sib != NULL) { /* the other relay of a dual allocation takes over */
            sib->primary = 1;
            sib->sibling = 0;
            sib->limited = s->limited;
            sib->up = s->up;
            sib->down = s->down;
            if (sib->via_fd >= 0)
                ctable_insert(f, (size_t)(sib - f->slots));
        }
        if (c != NULL && c->slot == idx + 1)
            c->slot = sib != NULL ? (uint32_t)(sib - f->slots) + 1 : 0;
    } else if (s->sibling) {
        f->slots[s->sibling - 1].sibling = 0;
    }
    if ((size_t)s->relay_fd < f->nfd)
        f->fdmap[s->relay_fd] = 0;
    s->live.used = 0;
    s->sibling = 0;
    f->freel[f->nfree++] = (uint32_t)idx;
    return r;
}

static PyObject *
Forwarder_pull(Forwarder *f, PyObject *arg)
{
    slot_t *s;
    if (ready(f) < 0 || (s = get_slot(f, arg)) == NULL)
        return NULL;
    return counters(s);
}

static int
parse_perms(slot_t *s, PyObject *perms, perm_t **out, size_t *nout)
{
    PyObject *seq = PySequence_Fast(perms, "permissions must be a sequence of (ip, lo, hi)");
    Py_ssize_t n, i;
    perm_t *p;
    size_t want = s->family == AF_INET ? 4 : 16;
    if (seq == NULL)
        return -1;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_PERMS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many permissions");
        return -1;
    }
    p = PyMem_Calloc(n ? (size_t)n : 1, sizeof *p);
    if (p == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *ip;
        int lo, hi;
        if (!PyArg_ParseTuple(item, "O!ii", &PyBytes_Type, &ip, &lo, &hi))
            goto fail;
        if ((size_t)PyBytes_GET_SIZE(ip) != want || lo < 0 || hi > 65535 || lo > hi) {
            PyErr_SetString(PyExc_ValueError, "bad permission (address of the relay's family, "
                                              "0 <= lo <= hi <= 65535)");
            goto fail;
        }
        memcpy(p[i].ip, PyBytes_AS_STRING(ip), want);
        p[i].lo = (uint16_t)lo;
        p[i].hi = (uint16_t)hi;
    }
    Py_DECREF(seq);
    *out = p;
    *nout = (size_t)n;
    return 0;
fail:
    PyMem_Free(p);
    Py_DECREF(seq);
    return -1;
}

static PyObject *
Forwarder_set_routes(Forwarder *f, PyObject *args)
{
    PyObject *slot_arg, *routes, *perms, *seq;
    slot_t *s;
    Py_ssize_t n, i;
    entry **made;
    perm_t *np = NULL;
    size_t idx, nnp = 0;
    if (!PyArg_ParseTuple(args, "OOO:set_routes", &slot_arg, &routes, &perms))
        return NULL;
    if (ready(f) < 0 || (s = get_slot(f, slot_arg)) == NULL)
        return NULL;
    idx = (size_t)(s - f->slots);
    seq = PySequence_Fast(routes, "routes must be a sequence of (channel, peer sockaddr)");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    made = PyMem_Calloc(n ? (size_t)n : 1, sizeof *made);
    if (made == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    /* build everything new first: a bad item leaves the old routes in place */
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *peer;
        int channel;
        entry *e;
        if (!PyArg_ParseTuple(item, "iO!", &channel, &PyBytes_Type, &peer))
            goto fail;
        if (channel < 0x4000 || channel > 0x7FFF) {
            PyErr_SetString(PyExc_ValueError, "channel number out of range");
            goto fail;
        }
        e = made[i] = PyMem_Calloc(1, sizeof *e);
        if (e == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        if (sa_from_bytes(peer, &e->peer_sa, &e->peer_len, &e->peer) < 0)
            goto fail;
        e->slot = (uint32_t)idx;
        e->relay_fd = s->relay_fd;
        e->channel = (uint16_t)channel;
        e->client = s->client;
        e->ohash = hkey(f->seed, (uint64_t)channel, &e->client);
        e->ihash = hkey(f->seed, 0x100000000ULL + (uint64_t)(uint32_t)e->relay_fd, &e->peer);
    }
    if (parse_perms(s, perms, &np, &nnp) < 0)
        goto fail;
    while (f->count + (size_t)n > f->nbk)
        if (grow(f) < 0)
            goto fail;
    clear_routes(f, s);
    for (i = 0; i < n; i++) {
        entry *e = made[i];
        size_t ob = e->ohash & (f->nbk - 1), ib = e->ihash & (f->nbk - 1);
        e->onext = f->obk[ob];
        f->obk[ob] = e;
        e->inext = f->ibk[ib];
        f->ibk[ib] = e;
        e->snext = s->entries;
        s->entries = e;
        f->count++;
    }
    PyMem_Free(s->perms);
    s->perms = np;
    s->nperms = nnp;
    PyMem_Free(made);
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    PyMem_Free(np);
    for (i = 0; i < n; i++)
        PyMem_Free(made[i]);
    PyMem_Free(made);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *
Forwarder_set_tokens(Forwarder *f, PyObject *args)
{
    PyObject *slot_arg, *up, *down;
    slot_t *s;
    if (!PyArg_ParseTuple(args, "OOO:set_tokens", &slot_arg, &up, &down))
        return NULL;
    if (ready(f) < 0 || (s = get_slot(f, slot_arg)) == NULL)
        return NULL;
    s = bucket_of(f, s);
    if (up == Py_None || down == Py_None) {
        s->limited = 0;
        Py_RETURN_NONE;
    }
    {
        double u = PyFloat_AsDouble(up), d;
        if (u == -1.0 && PyErr_Occurred())
            return NULL;
        d = PyFloat_AsDouble(down);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        s->up = u;
        s->down = d;
        s->limited = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Forwarder_attach(Forwarder *f, PyObject *args)
{
    int fd;
    const char *initial;
    Py_ssize_t ilen;
    size_t idx;
    conn_t *c;
    if (!PyArg_ParseTuple(args, "iy#:attach", &fd, &initial, &ilen))
        return NULL;
    if (ready(f) < 0 || fd_reserve(f, fd) < 0)
        return NULL;
    if ((size_t)ilen > STREAM_MAX_FRAME) {
        PyErr_SetString(PyExc_ValueError, "more initial bytes than one frame");
        return NULL;
    }
    if (f->ncfree == 0 && f->nconns == f->ccap) {
        size_t cap = f->ccap ? f->ccap * 2 : 16;
        conn_t *nc = PyMem_Realloc(f->conns, cap * sizeof *nc);
        uint32_t *nf, *nd;
        if (nc == NULL)
            return PyErr_NoMemory();
        f->conns = nc;
        nf = PyMem_Realloc(f->cfree, cap * sizeof *nf);
        if (nf == NULL)
            return PyErr_NoMemory();
        f->cfree = nf;
        nd = PyMem_Realloc(f->dirty, cap * sizeof *nd);
        if (nd == NULL)
            return PyErr_NoMemory();
        f->dirty = nd;
        f->ccap = cap;
    }
    idx = f->ncfree ? f->cfree[--f->ncfree] : f->nconns++;
    c = &f->conns[idx];
    memset(c, 0, sizeof *c);
    c->live.used = 1;
    c->fd = fd;
    c->live.gen = ++f->opens;
    c->key.b[0] = 'S';
    memcpy(c->key.b + 4, &idx, sizeof idx < 8 ? sizeof idx : 8);
    memcpy(c->key.b + 12, &c->live.gen, 8);
    if (ilen > 0) {
        if ((c->in = PyMem_RawMalloc((size_t)ilen)) == NULL) {
            c->live.used = 0;
            f->cfree[f->ncfree++] = (uint32_t)idx;
            return PyErr_NoMemory();
        }
        memcpy(c->in, initial, (size_t)ilen);
        c->inlen = (size_t)ilen;
        c->pending = 1;
        f->npending++;
    }
    f->fdmap[fd] = KIND_CONN << KIND_SHIFT | ((uint32_t)idx + 1);
    return PyLong_FromUnsignedLongLong(handle_of(c->live.gen, idx));
}

static PyObject *
Forwarder_write(Forwarder *f, PyObject *args)
{
    PyObject *conn_arg;
    const char *data;
    Py_ssize_t len;
    conn_t *c;
    if (!PyArg_ParseTuple(args, "Oy#:write", &conn_arg, &data, &len))
        return NULL;
    if (ready(f) < 0 || (c = get_conn(f, conn_arg)) == NULL)
        return NULL;
    if (conn_queue(f, c, (const unsigned char *)data, (size_t)len) < 0 || conn_flush(f, c) < 0)
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static PyObject *
Forwarder_backlog(Forwarder *f, PyObject *arg)
{
    conn_t *c;
    if (ready(f) < 0 || (c = get_conn(f, arg)) == NULL)
        return NULL;
    return PyLong_FromSize_t(c->outlen - c->outoff);
}

static PyObject *
Forwarder_detach(Forwarder *f, PyObject *arg)
{
    conn_t *c;
    size_t idx;
    if (ready(f) < 0 || (c = get_conn(f, arg)) == NULL)
        return NULL;
    idx = (size_t)(c - f->conns);
    if (c->slot) { /* its allocation's slots forget it (Python closes them first) */
        slot_t *s = &f->slots[c->slot - 1];
        s->conn = 0;
        if (s->sibling)
            f->slots[s->sibling - 1].conn = 0;
    }
    if (c->pending)
        f->npending--;
    free_conn(c);
    if ((size_t)c->fd < f->nfd)
        f->fdmap[c->fd] = 0;
    c->live.used = 0;
    f->cfree[f->ncfree++] = (uint32_t)idx;
    Py_RETURN_NONE;
}

static PyObject *
Forwarder_poll(Forwarder *f, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event ev[MAX_EVENTS];
    PyObject *misses = NULL;
    int n, i;
    size_t k;
    if (ready(f) < 0)
        return NULL;
    f->busy = 1;
    for (k = 0; f->npending && k < f->nconns; k++) /* bytes attached, not yet framed */
        if (f->conns[k].live.used && f->conns[k].pending
            && drain_stream(f, &f->conns[k], &misses) < 0)
            goto fail;
    n = epoll_wait(f->epfd, ev, MAX_EVENTS, 0);
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        n = 0;
    }
    for (i = 0; i < n; i++) {
        int fd = ev[i].data.fd;
        uint32_t m = fd_lookup(f, fd), kind = m >> KIND_SHIFT;
        size_t idx = (m & ((1u << KIND_SHIFT) - 1)) - 1;
        if (kind == KIND_LISTENER) {
            if (drain_listener(f, fd, &misses) < 0)
                goto fail;
        } else if (kind == KIND_SLOT) {
            if (drain_relay(f, fd, &f->slots[idx], &misses) < 0)
                goto fail;
        } else if (kind == KIND_CONN) {
            conn_t *c = &f->conns[idx];
            if (ev[i].events & EPOLLOUT && !c->dead && conn_flush(f, c) < 0
                && report_closed(f, c, &misses) < 0)
                goto fail;
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) && drain_stream(f, c, &misses) < 0)
                goto fail;
        } else if (hand_back(&misses, fd, 0, NULL, 0, NULL, 0) < 0) {
            goto fail; /* not ours: Python's to deal with */
        }
    }
    flush_down(f);
    for (k = 0; k < f->ndirty; k++) {
        conn_t *c = &f->conns[f->dirty[k]];
        c->dirty = 0;
        if (c->live.used && conn_flush(f, c) < 0 && report_closed(f, c, &misses) < 0) {
            f->ndirty = 0;
            goto fail;
        }
    }
    f->ndirty = 0;
    f->busy = 0;
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
fail:
    flush_down(f);
    for (k = 0; k < f->ndirty; k++)
        f->conns[f->dirty[k]].dirty = 0;
    f->ndirty = 0;
    f->busy = 0;
    Py_XDECREF(misses);
    return NULL;
}

static PyObject *
Forwarder_get_routes(Forwarder *f, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(f->count);
}

static PyObject *
Forwarder_get_slots(Forwarder *f, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(f->nslots - f->nfree);
}

static PyObject *
Forwarder_get_streams(Forwarder *f, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(f->nconns - f->ncfree);
}

static PyMethodDef Forwarder_methods[] = {
    {"listen", (PyCFunction)Forwarder_listen, METH_O,
     "listen(fd): a UDP listener (registered in the epoll set by the caller)."},
    {"open", (PyCFunction)Forwarder_open, METH_VARARGS,
     "open(relay_fd, listener_fd, client_sockaddr, partner=None) -> handle: a relay socket of "
     "a UDP client's allocation (partner: the handle of its other-family relay)."},
    {"open_stream", (PyCFunction)Forwarder_open_stream, METH_VARARGS,
     "open_stream(relay_fd, stream, partner=None) -> handle: a relay socket of a TCP client's "
     "allocation."},
    {"close", (PyCFunction)Forwarder_close, METH_O,
     "close(handle) -> (pk_out, by_out, pk_in, by_in) not yet pulled; forgets its routes."},
    {"pull", (PyCFunction)Forwarder_pull, METH_O,
     "pull(handle) -> (pk_out, by_out, pk_in, by_in) since the last pull (then zero)."},
    {"set_routes", (PyCFunction)Forwarder_set_routes, METH_VARARGS,
     "set_routes(handle, [(channel, peer_sockaddr)], [(ip_bytes, lo_port, hi_port)]): replace "
     "its bound channels and permissions."},
    {"set_tokens", (PyCFunction)Forwarder_set_tokens, METH_VARARGS,
     "set_tokens(handle, up, down): bucket balances in bytes; None: unlimited."},
    {"attach", (PyCFunction)Forwarder_attach, METH_VARARGS,
     "attach(fd, initial) -> stream: a TCP client connection (registered by the caller); "
     "initial: bytes already read from it, framed at the next poll."},
    {"write", (PyCFunction)Forwarder_write, METH_VARARGS,
     "write(stream, data) -> False when the stream is dead."},
    {"backlog", (PyCFunction)Forwarder_backlog, METH_O,
     "backlog(stream) -> bytes waiting to be written to it."},
    {"detach", (PyCFunction)Forwarder_detach, METH_O,
     "detach(stream): forget a connection (the caller closes and unregisters it)."},
    {"poll", (PyCFunction)Forwarder_poll, METH_NOARGS,
     "poll() -> list of (fd, handle, data, key, raw_sockaddr) for the slow path, or None."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Forwarder_getset[] = {
    {"routes", (getter)Forwarder_get_routes, NULL, "bound channels mirrored", NULL},
    {"slots", (getter)Forwarder_get_slots, NULL, "open relay sockets", NULL},
    {"streams", (getter)Forwarder_get_streams, NULL, "attached TCP connections", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "metadata_relay.turn._forward.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The TURN relay path of one epoll set: listeners, relay sockets, TCP clients.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
    .tp_getset = Forwarder_getset,
};

static struct PyModuleDef forward_module = {
    PyModuleDef_HEAD_INIT, "_forward",
    "The per-packet TURN relay path (see _forward.c).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__forward(void)
{
    PyObject *m;
    crc_init();
    if (PyType_Ready(&ForwarderType) < 0)
        return NULL;
    m = PyModule_Create(&forward_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Forwarder", (PyObject *)&ForwarderType) < 0
        || PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
        || PyModule_AddIntConstant(m, "MAX_UDP", MAX_UDP) < 0
        || PyModule_AddIntConstant(m, "STREAM_BACKLOG", STREAM_BACKLOG) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
