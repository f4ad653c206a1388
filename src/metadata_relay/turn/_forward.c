/*
 * metadata_relay.turn._forward: the per-datagram ChannelData forwarding of bound channels,
 * in C.
 *
 * Why: T1 (issue 7) showed the kernel time per relayed packet already at coturn's level and
 * the remaining gap to be interpreter time in the per-datagram Python loops. This module
 * moves only those loops out of Python. It decides nothing: the routes (which client address
 * and channel go to which peer on which relay socket, and back) are mirrored from
 * Allocation.out_routes/in_routes by turn/native.py whenever the state machine rebuilds them,
 * and everything a route does not cover (STUN, Send/Data indications, garbage, misses) is
 * handed back to Python, where turn/allocation.py and turn/server.py decide as they do for
 * the event-loop edge.
 *
 * Per allocation ("slot") C keeps packet/byte counters in both directions and the two token
 * buckets of TURN_MAX_RATE; Python pulls the counters and re-seeds the buckets on its tick.
 *
 * Every call is non-blocking (MSG_DONTWAIT on sockets the caller made non-blocking anyway)
 * and keeps the GIL. Nothing here calls back into Python while a batch is staged except
 * object allocation for returned datagrams; the `busy` flag refuses re-entrant use (e.g. from
 * a finalizer run by the garbage collector) so staged pointers stay valid.
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
#define SLOT (65536 + 64)        /* room for any UDP payload plus a ChannelData header */
#define PAD 4                    /* peer datagrams land this far into their slot */
#define MAX_UDP 65507            /* largest IPv4 UDP payload */
#define LISTENER_ROUNDS 4        /* recvmmsg calls on the listener per poll at most */
#define MAX_EVENTS 256
#define MAX_FD (1 << 22)         /* sanity bound for the fd -> slot map */
#define SLOT_BITS 24             /* a handle is generation << SLOT_BITS | slot (slots < MAX_FD) */

/* A canonical address: family tag, port, address, scope (zero-filled). */
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
    int used;
    int relay_fd;
    uint64_t gen; /* which open() this slot serves now: slots and fds are reused */
    akey client;
    struct sockaddr_storage client_sa;
    socklen_t client_len;
    entry *entries;
    unsigned long long pk_out, by_out, pk_in, by_in;
    int limited;
    double up, down; /* tokens (bytes) left in each direction's bucket when limited */
} slot_t;

typedef struct {
    PyObject_HEAD
    int lfd;
    int busy;
    uint64_t seed; /* random per Forwarder: chains cannot be lengthened by chosen channels/ports */
    uint64_t opens; /* open() calls so far: the generation of the next slot opened */
    /* slots and the fd -> slot + 1 map */
    slot_t *slots;
    size_t nslots, cap;
    uint32_t *freel;
    size_t nfree;
    uint32_t *fdslot;
    size_t nfd;
    /* the two route tables: one entry per bound channel, on both chains */
    entry **obk, **ibk;
    size_t nbk, count;
    /* listener receive batch; client->peer sends point into it */
    unsigned char *rbuf;
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_storage rname[BATCH];
    struct mmsghdr smsg[BATCH];
    struct iovec siov[BATCH];
    /* relay receive batch, sent on to the clients from the same slots */
    unsigned char *tbuf;
    struct mmsghdr trmsg[BATCH];
    struct iovec triov[BATCH];
    struct sockaddr_storage tname[BATCH];
    struct mmsghdr tmsg[BATCH];
    struct iovec tiov[BATCH];
    unsigned int tw; /* queued peer->client datagrams */
} Forwarder;

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

/* The handle Python holds for a slot: it names one open(), so a handle (or a datagram handed
 * back with it) from before a close never matches the allocation that reuses the slot or fd. */
static uint64_t
handle_of(Forwarder *f, const slot_t *s)
{
    return s->gen << SLOT_BITS | (uint64_t)(s - f->slots);
}

static slot_t *
get_slot(Forwarder *f, PyObject *arg)
{
    unsigned long long h = PyLong_AsUnsignedLongLong(arg);
    size_t i;
    if (h == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        h = 0; /* negative or too big: no such handle */
    }
    i = (size_t)(h & ((1ULL << SLOT_BITS) - 1));
    if (i >= f->nslots || !f->slots[i].used || f->slots[i].gen != h >> SLOT_BITS) {
        PyErr_SetString(PyExc_KeyError, "no such slot");
        return NULL;
    }
    return &f->slots[i];
}

static int
check_idle(Forwarder *f)
{
    if (f->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Forwarder is in use (re-entrant call)");
        return -1;
    }
    return 0;
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

static void
flush_down(Forwarder *f)
{
    if (f->tw)
        send_all(f->lfd, f->tmsg, f->tw);
    f->tw = 0;
}

/* (fd, handle, data, key, raw): a datagram for Python's slow path. handle is the slot's (see
 * handle_of) for a relay socket, 0 for the listener: Python drops the datagram unless the
 * handle is still the one of the allocation now on that fd. key is how turn/native.py keys
 * addresses (the first 8 sockaddr bytes as a native integer for IPv4, the raw bytes for IPv6).
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
    if (data == NULL || sa == NULL) {
        PyTuple_SET_ITEM(item, 2, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(item, 3, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(item, 4, Py_NewRef(Py_None));
    } else {
        PyObject *d, *raw, *key;
        if (salen > (socklen_t)sizeof(*sa))
            salen = (socklen_t)sizeof(*sa);
        if ((d = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len)) == NULL)
            goto fail;
        PyTuple_SET_ITEM(item, 2, d);
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

/* ---- the two hot loops ------------------------------------------------------------------- */

/* Client -> peer: ChannelData on a bound channel goes out of its relay socket. */
static int
drain_listener(Forwarder *f, PyObject **misses)
{
    int round, i, n;
    for (round = 0; round < LISTENER_ROUNDS; round++) {
        unsigned int staged = 0;
        int sfd = -1;
        for (i = 0; i < BATCH; i++) {
            f->rmsg[i].msg_hdr.msg_namelen = sizeof(f->rname[i]);
            f->rmsg[i].msg_hdr.msg_flags = 0;
        }
        n = recvmmsg(f->lfd, f->rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return 0;
        for (i = 0; i < n; i++) {
            const unsigned char *d = f->rbuf + (size_t)i * SLOT;
            size_t len = f->rmsg[i].msg_len;
            struct msghdr *h = &f->rmsg[i].msg_hdr;
            unsigned int channel, cl;
            akey client;
            entry *e;
            slot_t *s;
            if (h->msg_flags & MSG_TRUNC || len > SLOT)
                continue; /* cannot be a valid STUN/TURN message */
            if (len < 4 || (d[0] & 0xC0) != 0x40 || canon(&f->rname[i], h->msg_namelen, &client) < 0)
                goto slow;
            channel = (unsigned int)d[0] << 8 | d[1];
            e = find_out(f, &client, channel);
            if (e == NULL)
                goto slow;
            cl = (unsigned int)d[2] << 8 | d[3];
            if ((size_t)cl + 4 > len)
                continue; /* length beyond the datagram: dropped, as the Python path does */
            s = &f->slots[e->slot];
            if (s->limited) {
                if (s->up < cl)
                    continue;
                s->up -= cl;
            }
            s->pk_out++;
            s->by_out += cl;
            if (staged && e->relay_fd != sfd) {
                send_all(sfd, f->smsg, staged);
                staged = 0;
            }
            sfd = e->relay_fd;
            f->siov[staged].iov_base = (void *)(d + 4);
            f->siov[staged].iov_len = cl;
            f->smsg[staged].msg_hdr.msg_name = &e->peer_sa;
            f->smsg[staged].msg_hdr.msg_namelen = e->peer_len;
            staged++;
            continue;
        slow:
            if (len > 0 && hand_back(misses, f->lfd, 0, d, len, &f->rname[i], h->msg_namelen) < 0) {
                if (staged)
                    send_all(sfd, f->smsg, staged);
                return -1;
            }
        }
        if (staged)
            send_all(sfd, f->smsg, staged);
        if (n < BATCH)
            return 0;
    }
    return 0;
}

/* Peer -> client: a routed peer's datagram becomes ChannelData, queued for one sendmmsg. */
static int
drain_relay(Forwarder *f, int fd, slot_t *s, PyObject **misses)
{
    unsigned int w, j, end;
    int n;
    if (f->tw == BATCH)
        flush_down(f);
    w = f->tw;
    for (j = w; j < BATCH; j++) {
        f->trmsg[j].msg_hdr.msg_namelen = sizeof(f->tname[j]);
        f->trmsg[j].msg_hdr.msg_flags = 0;
    }
    n = recvmmsg(fd, f->trmsg + w, BATCH - w, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    end = w + (unsigned int)n;
    for (j = w; j < end; j++) {
        unsigned char *d = f->tbuf + (size_t)j * SLOT;
        size_t len = f->trmsg[j].msg_len;
        struct msghdr *h = &f->trmsg[j].msg_hdr;
        unsigned char *o;
        akey peer;
        entry *e;
        if (h->msg_flags & MSG_TRUNC || len > SLOT - PAD)
            continue;
        if (canon(&f->tname[j], h->msg_namelen, &peer) < 0)
            continue;
        e = find_in(f, fd, &peer);
        if (e == NULL || len > MAX_UDP - 4) {
            /* no channel (Data indication or drop) or too big for a frame: Python decides */
            if (hand_back(misses, fd, handle_of(f, s), d + PAD, len, &f->tname[j],
                          h->msg_namelen) < 0)
                return -1;
            continue;
        }
        if (s->limited) {
            if (s->down < (double)len)
                continue;
            s->down -= (double)len;
        }
        s->pk_in++;
        s->by_in += len;
        o = f->tbuf + (size_t)w * SLOT;
        if (w != j)
            memmove(o + PAD, d + PAD, len); /* close the gap left by earlier misses */
        o[0] = (unsigned char)(e->channel >> 8);
        o[1] = (unsigned char)(e->channel & 0xFF);
        o[2] = (unsigned char)(len >> 8);
        o[3] = (unsigned char)(len & 0xFF);
        f->tiov[w].iov_len = len + 4;
        f->tmsg[w].msg_hdr.msg_name = &s->client_sa;
        f->tmsg[w].msg_hdr.msg_namelen = s->client_len;
        w++;
    }
    f->tw = w;
    return 0;
}

/* ---- the Python type ---------------------------------------------------------------------- */

static int
Forwarder_init(Forwarder *f, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"listener_fd", NULL};
    int lfd, i;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &lfd))
        return -1;
    if (lfd < 0) {
        PyErr_SetString(PyExc_ValueError, "bad fd");
        return -1;
    }
    if (f->rbuf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    f->lfd = lfd;
    /* A secret hash seed: an authenticated client picks its channel numbers and peer ports,
     * and with a known seed could choose them to share one chain (a slow lookup per packet). */
    if (getrandom(&f->seed, sizeof f->seed, GRND_NONBLOCK) != (ssize_t)sizeof f->seed) {
        PyErr_SetString(PyExc_OSError, "getrandom failed");
        return -1;
    }
    f->seed |= 1;
    /* calloc of this size maps fresh pages: only the slots datagrams fill become resident */
    f->rbuf = PyMem_RawCalloc(BATCH, SLOT);
    f->tbuf = PyMem_RawCalloc(BATCH, SLOT);
    if (f->rbuf == NULL || f->tbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < BATCH; i++) {
        f->riov[i].iov_base = f->rbuf + (size_t)i * SLOT;
        f->riov[i].iov_len = SLOT;
        f->rmsg[i].msg_hdr.msg_name = &f->rname[i];
        f->rmsg[i].msg_hdr.msg_iov = &f->riov[i];
        f->rmsg[i].msg_hdr.msg_iovlen = 1;
        f->smsg[i].msg_hdr.msg_iov = &f->siov[i];
        f->smsg[i].msg_hdr.msg_iovlen = 1;
        f->triov[i].iov_base = f->tbuf + (size_t)i * SLOT + PAD;
        f->triov[i].iov_len = SLOT - PAD;
        f->trmsg[i].msg_hdr.msg_name = &f->tname[i];
        f->trmsg[i].msg_hdr.msg_iov = &f->triov[i];
        f->trmsg[i].msg_hdr.msg_iovlen = 1;
        f->tiov[i].iov_base = f->tbuf + (size_t)i * SLOT;
        f->tmsg[i].msg_hdr.msg_iov = &f->tiov[i];
        f->tmsg[i].msg_hdr.msg_iovlen = 1;
    }
    return grow(f);
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
    }
    PyMem_Free(f->slots);
    PyMem_Free(f->freel);
    PyMem_Free(f->fdslot);
    PyMem_Free(f->obk);
    PyMem_Free(f->ibk);
    PyMem_RawFree(f->rbuf);
    PyMem_RawFree(f->tbuf);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static int
ready(Forwarder *f)
{
    if (f->rbuf == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Forwarder not initialised");
        return -1;
    }
    return check_idle(f);
}

static PyObject *
Forwarder_open(Forwarder *f, PyObject *args)
{
    int fd;
    PyObject *client;
    struct sockaddr_storage sa;
    socklen_t len;
    akey k;
    size_t idx;
    slot_t *s;
    if (!PyArg_ParseTuple(args, "iO!:open", &fd, &PyBytes_Type, &client))
        return NULL;
    if (ready(f) < 0 || sa_from_bytes(client, &sa, &len, &k) < 0)
        return NULL;
    if (fd < 0 || fd >= MAX_FD || fd == f->lfd) {
        PyErr_SetString(PyExc_ValueError, "bad relay fd");
        return NULL;
    }
    if ((size_t)fd < f->nfd && f->fdslot[fd]) {
        PyErr_SetString(PyExc_ValueError, "relay fd already open");
        return NULL;
    }
    if ((size_t)fd >= f->nfd) {
        size_t n = f->nfd ? f->nfd : 64;
        uint32_t *m;
        while (n <= (size_t)fd)
            n *= 2;
        m = PyMem_Realloc(f->fdslot, n * sizeof *m);
        if (m == NULL)
            return PyErr_NoMemory();
        memset(m + f->nfd, 0, (n - f->nfd) * sizeof *m);
        f->fdslot = m;
        f->nfd = n;
    }
    if (f->nfree) {
        idx = f->freel[--f->nfree];
    } else {
        if (f->nslots == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 16;
            slot_t *ns = PyMem_Realloc(f->slots, cap * sizeof *ns);
            uint32_t *nf;
            if (ns == NULL)
                return PyErr_NoMemory();
            f->slots = ns;
            nf = PyMem_Realloc(f->freel, cap * sizeof *nf);
            if (nf == NULL)
                return PyErr_NoMemory();
            f->freel = nf;
            f->cap = cap;
        }
        idx = f->nslots++;
    }
    s = &f->slots[idx];
    memset(s, 0, sizeof *s);
    s->used = 1;
    s->gen = ++f->opens;
    s->relay_fd = fd;
    s->client = k;
    s->client_sa = sa;
    s->client_len = len;
    f->fdslot[fd] = (uint32_t)idx + 1;
    return PyLong_FromUnsignedLongLong(handle_of(f, s));
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
    if (ready(f) < 0 || (s = get_slot(f, arg)) == NULL)
        return NULL;
    if ((r = counters(s)) == NULL)
        return NULL;
    clear_routes(f, s);
    if ((size_t)s->relay_fd < f->nfd)
        f->fdslot[s->relay_fd] = 0;
    s->used = 0;
    f->freel[f->nfree++] = (uint32_t)(s - f->slots);
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

static PyObject *
Forwarder_set_routes(Forwarder *f, PyObject *args)
{
    PyObject *slot_arg, *routes, *seq;
    slot_t *s;
    Py_ssize_t n, i;
    entry **made;
    size_t idx;
    if (!PyArg_ParseTuple(args, "OO:set_routes", &slot_arg, &routes))
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
    /* build every new entry first: a bad item leaves the old routes in place */
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
    PyMem_Free(made);
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
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
Forwarder_poll(Forwarder *f, PyObject *arg)
{
    struct epoll_event ev[MAX_EVENTS];
    PyObject *misses = NULL;
    int epfd, n, i;
    long lep = PyLong_AsLong(arg);
    if (lep == -1 && PyErr_Occurred())
        return NULL;
    if (lep < 0 || lep > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad epoll fd");
        return NULL;
    }
    epfd = (int)lep;
    if (ready(f) < 0)
        return NULL;
    n = epoll_wait(epfd, ev, MAX_EVENTS, 0);
    if (n < 0) {
        if (errno == EINTR)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    f->busy = 1;
    for (i = 0; i < n; i++) {
        int fd = ev[i].data.fd;
        if (fd == f->lfd) {
            if (drain_listener(f, &misses) < 0)
                goto fail;
        } else if (fd >= 0 && (size_t)fd < f->nfd && f->fdslot[fd]) {
            if (drain_relay(f, fd, &f->slots[f->fdslot[fd] - 1], &misses) < 0)
                goto fail;
        } else if (hand_back(&misses, fd, 0, NULL, 0, NULL, 0) < 0) {
            goto fail; /* not ours: Python's to deal with */
        }
    }
    flush_down(f);
    f->busy = 0;
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
fail:
    flush_down(f);
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

static PyMethodDef Forwarder_methods[] = {
    {"open", (PyCFunction)Forwarder_open, METH_VARARGS,
     "open(relay_fd, client_sockaddr) -> handle: an allocation's relay socket and client "
     "(the handle names this open only: after close it matches nothing)."},
    {"close", (PyCFunction)Forwarder_close, METH_O,
     "close(handle) -> (pk_out, by_out, pk_in, by_in) not yet pulled; forgets its routes."},
    {"pull", (PyCFunction)Forwarder_pull, METH_O,
     "pull(handle) -> (pk_out, by_out, pk_in, by_in) since the last pull (then zero)."},
    {"set_routes", (PyCFunction)Forwarder_set_routes, METH_VARARGS,
     "set_routes(handle, [(channel, peer_sockaddr), ...]): replace its bound channels."},
    {"set_tokens", (PyCFunction)Forwarder_set_tokens, METH_VARARGS,
     "set_tokens(handle, up, down): bucket balances in bytes; None: unlimited."},
    {"poll", (PyCFunction)Forwarder_poll, METH_O,
     "poll(epoll_fd) -> list of (fd, handle, data, key, raw_sockaddr) for the slow path, "
     "or None."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Forwarder_getset[] = {
    {"routes", (getter)Forwarder_get_routes, NULL, "bound channels mirrored", NULL},
    {"slots", (getter)Forwarder_get_slots, NULL, "open allocations", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "metadata_relay.turn._forward.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ChannelData forwarding of bound channels for one TURN UDP listener.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
    .tp_getset = Forwarder_getset,
};

static struct PyModuleDef forward_module = {
    PyModuleDef_HEAD_INIT, "_forward",
    "Per-datagram ChannelData forwarding of bound TURN channels (see _forward.c).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__forward(void)
{
    PyObject *m;
    if (PyType_Ready(&ForwarderType) < 0)
        return NULL;
    m = PyModule_Create(&forward_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Forwarder", (PyObject *)&ForwarderType) < 0
        || PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
        || PyModule_AddIntConstant(m, "MAX_UDP", MAX_UDP) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
