/* vnet._datapath: the per-packet loops of the data path, in C (docs/design.md, "the
 * native module"). Bytes only: it seals and opens WireGuard transport messages with the
 * keys and counters it is given and reports what it did (which rows did not
 * authenticate, which counters it read). Keys, counters, the replay window, timers and
 * every other decision stay in Python. ChaCha20-Poly1305 is Debian's libcrypto (EVP),
 * one context per key, reused for every message. The batch calls release the GIL.
 *
 * The readable reference of every call is vnet/wireguard/aead.py (PySealer, PyOpener);
 * tests hold the two to identical bytes and verdicts. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define KEY_SIZE 32
#define HEADER_SIZE 16 /* type (4, little-endian), receiver index (4), counter (8) */
#define TAG_SIZE 16
#define MESSAGE_MIN (HEADER_SIZE + TAG_SIZE)
#define MESSAGE_TRANSPORT 4
#define MAX_MESSAGE (1 << 20) /* far above any datagram: bounds every length we compute */

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* --- TSO split (the rules of vnet.packet.gso.reference_split_tcp) ---------------------- */

#define FIN 0x01
#define PSH 0x08
#define CWR 0x80
#define IPPROTO_TCP_ 6

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "sum16 reads little-endian words"
#endif

/* The one's-complement sum of the big-endian 16-bit words of p[0:n] (a lone last byte
 * padded with zero), folded to 16 bits. Summed as native (little-endian) 32-bit words,
 * 2^16 being 1 modulo 0xFFFF: the sum is the same with the bytes of every word swapped,
 * so the folded result is swapped once at the end (RFC 1071 §2(B)). Eight words a step,
 * independent of each other, ran twice as fast as one 64-bit word a step (gcc -O2). */
static uint64_t sum16(const uint8_t *p, Py_ssize_t n) {
    uint64_t s = 0;
    uint32_t w[8];
    uint16_t h;
    for (; n >= 32; p += 32, n -= 32) {
        memcpy(w, p, 32);
        s += (uint64_t)w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7];
    }
    for (; n >= 4; p += 4, n -= 4) {
        memcpy(w, p, 4);
        s += w[0];
    }
    for (; n >= 2; p += 2, n -= 2) {
        memcpy(&h, p, 2);
        s += h;
    }
    if (n) s += p[0];
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    return (s >> 8 | s << 8) & 0xFFFF;
}

static uint16_t fold_checksum(uint64_t s) {
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)~s;
}

static void put_be16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* A TSO super-packet (IPv4 or IPv6 TCP, no virtio_net_hdr) and how it splits: `count`
 * segments of `mss` payload bytes, the last `total - (count - 1) * mss`. */
typedef struct {
    const uint8_t *p;
    Py_ssize_t iph, tcph, headers, total, count, mss;
    int v4;
    uint8_t flags0;
    uint32_t seq0, id0;
    uint64_t addresses; /* the pseudo-header's address sum */
} Tso;

/* 0, or -1 for a packet this does not handle (the Python reference names the problem). */
static int tso_parse(Tso *t, const uint8_t *p, Py_ssize_t len, int v4, Py_ssize_t mss) {
    Py_ssize_t iph;
    if (v4) {
        iph = len >= 20 ? (p[0] & 0xF) * 4 : 0;
        if (len < 20 || p[0] >> 4 != 4 || iph < 20 || p[9] != IPPROTO_TCP_) return -1;
    } else {
        iph = 40;
        if (len < 40 || p[0] >> 4 != 6 || p[6] != IPPROTO_TCP_) return -1;
    }
    if (len < iph + 20) return -1;
    Py_ssize_t tcph = (p[iph + 12] >> 4) * 4, headers = iph + tcph;
    if (tcph < 20 || len < headers || mss <= 0 || mss > 65535 || len - headers <= 0 ||
        len > 65535 + 65536)
        return -1;
    t->p = p;
    t->v4 = v4;
    t->iph = iph;
    t->tcph = tcph;
    t->headers = headers;
    t->mss = mss;
    t->total = len - headers;
    t->count = (t->total + mss - 1) / mss;
    t->flags0 = p[iph + 13];
    t->seq0 = (uint32_t)p[iph + 4] << 24 | (uint32_t)p[iph + 5] << 16 |
              (uint32_t)p[iph + 6] << 8 | p[iph + 7];
    t->id0 = v4 ? (uint32_t)(p[4] << 8 | p[5]) : 0;
    t->addresses = v4 ? sum16(p + 12, 8) : sum16(p + 8, 32);
    return 0;
}

/* The payload bytes of segment i. */
static Py_ssize_t tso_payload(const Tso *t, Py_ssize_t i) {
    return i == t->count - 1 ? t->total - (t->count - 1) * t->mss : t->mss;
}

/* Segment i as a whole packet at `row` (headers + payload bytes): its own lengths, IPv4
 * id and checksum, TCP sequence number, flags (FIN/PSH on the last, CWR on the first) and
 * checksum. */
static void tso_write(const Tso *t, Py_ssize_t i, uint8_t *row) {
    Py_ssize_t iph = t->iph, headers = t->headers, seg = tso_payload(t, i);
    memcpy(row, t->p, (size_t)headers);
    memcpy(row + headers, t->p + headers + i * t->mss, (size_t)seg);
    uint8_t flags = t->flags0 & ~(FIN | PSH | CWR);
    if (i == 0) flags |= t->flags0 & CWR;
    if (i == t->count - 1) flags |= t->flags0 & (FIN | PSH);
    row[iph + 13] = flags;
    put_be32(row + iph + 4, t->seq0 + (uint32_t)(i * t->mss));
    row[iph + 16] = row[iph + 17] = 0;
    if (t->v4) {
        put_be16(row + 2, (uint32_t)(headers + seg));
        put_be16(row + 4, (t->id0 + (uint32_t)i) & 0xFFFF);
        row[10] = row[11] = 0;
        put_be16(row + 10, fold_checksum(sum16(row, iph)));
    } else {
        put_be16(row + 4, (uint32_t)(t->tcph + seg));
    }
    uint64_t pseudo = t->addresses + IPPROTO_TCP_ + (uint64_t)(t->tcph + seg);
    put_be16(row + iph + 16, fold_checksum(pseudo + sum16(row + iph, t->tcph + seg)));
}

/* --- one cipher context per key ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    int busy; /* a batch call runs without the GIL: a second caller is refused */
} Aead;

static int aead_init_key(Aead *self, PyObject *args, int encrypt) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key)) return -1;
    int ok = key.len == KEY_SIZE;
    if (!ok) PyErr_SetString(PyExc_ValueError, "a ChaCha20-Poly1305 key is 32 bytes");
    if (ok) {
        EVP_CIPHER_CTX_free(self->ctx); /* __init__ called again: a new key */
        self->ctx = EVP_CIPHER_CTX_new();
        ok = self->ctx != NULL &&
             EVP_CipherInit_ex(self->ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, encrypt) ==
                 1 &&
             EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
             EVP_CipherInit_ex(self->ctx, NULL, NULL, key.buf, NULL, encrypt) == 1;
        if (!ok) PyErr_SetString(PyExc_RuntimeError, "libcrypto refused the cipher set-up");
    }
    PyBuffer_Release(&key);
    return ok ? 0 : -1;
}

static void aead_dealloc(Aead *self) {
    EVP_CIPHER_CTX_free(self->ctx); /* clears the key schedule */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int claim(Aead *self) {
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the cipher is not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the cipher is in use by another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static void nonce_for(uint8_t nonce[12], uint64_t counter) {
    memset(nonce, 0, 4);
    put_le64(nonce + 4, counter);
}

/* Seal n bytes of `in` into `out` (n bytes of ciphertext, then the tag). */
static int seal_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const uint8_t *in, int n,
                    uint8_t *out) {
    uint8_t nonce[12];
    int len = 0, fin = 0;
    nonce_for(nonce, counter);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return -1;
    if (n > 0 && EVP_EncryptUpdate(ctx, out, &len, in, n) != 1) return -1;
    if (EVP_EncryptFinal_ex(ctx, out + len, &fin) != 1) return -1;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_SIZE, out + n) == 1 ? 0 : -1;
}

/* Open n bytes of `in` (ciphertext then tag, n >= TAG_SIZE) into `out` (n - TAG_SIZE
 * bytes). On failure `out` is zeroed: unauthenticated bytes never leave this call. */
static int open_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const uint8_t *in, int n,
                    uint8_t *out) {
    uint8_t nonce[12], tag[TAG_SIZE];
    int m = n - TAG_SIZE, len = 0, fin = 0, ok;
    nonce_for(nonce, counter);
    memcpy(tag, in + m, TAG_SIZE); /* `in` may be `out`: keep the tag first */
    ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, tag) == 1 &&
         (m == 0 || EVP_DecryptUpdate(ctx, out, &len, in, m) == 1) &&
         EVP_DecryptFinal_ex(ctx, out + len, &fin) > 0;
    if (!ok) {
        memset(out, 0, (size_t)m);
        return -1;
    }
    return 0;
}

static int counter_arg(PyObject *value, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* --- Sealer ------------------------------------------------------------------------- */

static int sealer_init(Aead *self, PyObject *args, PyObject *kwds) {
    (void)kwds;
    return aead_init_key(self, args, 1);
}

static PyObject *sealer_seal(Aead *self, PyObject *args) {
    PyObject *counter_obj;
    Py_buffer plain;
    uint64_t counter;
    if (!PyArg_ParseTuple(args, "Oy*", &counter_obj, &plain)) return NULL;
    PyObject *out = NULL;
    if (counter_arg(counter_obj, &counter) < 0) goto done;
    if (plain.len > MAX_MESSAGE) {
        PyErr_SetString(PyExc_ValueError, "plaintext too long");
        goto done;
    }
    if (claim(self) < 0) goto done;
    out = PyBytes_FromStringAndSize(NULL, plain.len + TAG_SIZE);
    if (out != NULL &&
        seal_one(self->ctx, counter, plain.buf, (int)plain.len,
                 (uint8_t *)PyBytes_AS_STRING(out)) < 0) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
    }
    self->busy = 0;
done:
    PyBuffer_Release(&plain);
    return out;
}

/* Bytes of zero padding after a plaintext of `length` bytes: up to a multiple of 16, not
 * past `mtu` (0: no limit), counted from the last `mtu` bytes of a longer one: the rule of
 * vnet.wireguard.messages.padding (§5.4.6) for any length. */
static Py_ssize_t padding_for(Py_ssize_t length, Py_ssize_t mtu) {
    Py_ssize_t last = mtu && length > mtu ? length % mtu : length;
    Py_ssize_t padded = (last + 15) & ~(Py_ssize_t)15;
    if (mtu && padded > mtu) padded = mtu;
    return padded - last;
}

/* A plaintext of n bytes with its padding (padding_for). */
static Py_ssize_t padded_length(Py_ssize_t n, Py_ssize_t mtu) {
    return n + padding_for(n, mtu);
}

/* seal_message(packet, mtu, remote_index, counter) -> bytes: one whole transport message
 * (header, packet padded with zeros, tag) in one call: the latency path's send. */
static PyObject *sealer_seal_message(Aead *self, PyObject *args) {
    Py_buffer packet;
    Py_ssize_t mtu;
    unsigned long remote;
    PyObject *counter_obj, *out = NULL;
    uint64_t counter;
    if (!PyArg_ParseTuple(args, "y*nkO", &packet, &mtu, &remote, &counter_obj)) return NULL;
    if (counter_arg(counter_obj, &counter) < 0) goto done;
    if (packet.len > MAX_MESSAGE || mtu < 0 || remote > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_ValueError,
                        "seal_message: bad packet length, mtu or receiver index");
        goto done;
    }
    Py_ssize_t padded = padded_length(packet.len, mtu);
    if (claim(self) < 0) goto done;
    out = PyBytes_FromStringAndSize(NULL, MESSAGE_MIN + padded);
    if (out != NULL) {
        uint8_t *message = (uint8_t *)PyBytes_AS_STRING(out), *plain = message + HEADER_SIZE;
        put_le32(message, MESSAGE_TRANSPORT);
        put_le32(message + 4, (uint32_t)remote);
        put_le64(message + 8, counter);
        memcpy(plain, packet.buf, (size_t)packet.len);
        memset(plain + packet.len, 0, (size_t)(padded - packet.len));
        if (seal_one(self->ctx, counter, plain, (int)padded, plain) < 0) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
        }
    }
    self->busy = 0;
done:
    PyBuffer_Release(&packet);
    return out;
}

/* seal_run(plain, stride, count, padded, last, remote_index, first_counter, out): row i of
 * `plain` (at i * stride: `padded` bytes, the last row `last`) becomes transport message
 * i of `out`, each 32 + padded bytes apart, counters first_counter + i. */
static PyObject *sealer_seal_run(Aead *self, PyObject *args) {
    Py_buffer plain, out;
    Py_ssize_t stride, count, padded, last;
    unsigned long remote;
    PyObject *first_obj;
    uint64_t first;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nnnnkOw*", &plain, &stride, &count, &padded, &last, &remote,
                          &first_obj, &out))
        return NULL;
    Py_ssize_t size = MESSAGE_MIN + padded;
    if (counter_arg(first_obj, &first) < 0) goto done;
    if (count < 1 || padded < 0 || last < 0 || last > padded || padded > stride ||
        padded > MAX_MESSAGE || count > MAX_MESSAGE || remote > 0xFFFFFFFFUL ||
        first > UINT64_MAX - (uint64_t)count) {
        PyErr_SetString(PyExc_ValueError, "seal_run: inconsistent sizes or counters");
        goto done;
    }
    if (plain.len < (count - 1) * stride + last ||
        (count > 1 && plain.len < (count - 2) * stride + padded) ||
        out.len != (count - 1) * size + MESSAGE_MIN + last) {
        PyErr_SetString(PyExc_ValueError, "seal_run: a buffer has the wrong length");
        goto done;
    }
    if (claim(self) < 0) goto done;
    int failed = 0;
    const uint8_t *in = plain.buf;
    uint8_t *dst = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        uint8_t *message = dst + i * size;
        int n = (int)(i == count - 1 ? last : padded);
        put_le32(message, MESSAGE_TRANSPORT);
        put_le32(message + 4, (uint32_t)remote);
        put_le64(message + 8, first + (uint64_t)i);
        failed = seal_one(self->ctx, first + (uint64_t)i, in + i * stride, n,
                          message + HEADER_SIZE) < 0;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (failed)
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
    else
        result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&plain);
    PyBuffer_Release(&out);
    return result;
}


/* seal_tso(packet, v4, mss, mtu, remote_index, first_counter, max_count) -> (out, size,
 * count) or None. A TSO super-packet (as split_tcp takes it) split into its `count`
 * segments, each padded with zeros to a multiple of 16 but not past `mtu` (0: no limit)
 * and sealed as transport message i with counter first_counter + i, straight into the
 * buffer of one UDP GSO send: messages `size` bytes apart, the last possibly shorter.
 * None, with nothing done, for a packet split_tcp declines, a segment longer than `mtu`,
 * or more than `max_count` segments (the counters left in the keypair). */
static PyObject *sealer_seal_tso(Aead *self, PyObject *args) {
    Py_buffer in;
    int v4;
    Py_ssize_t mss, mtu;
    unsigned long remote;
    unsigned long long max_count;
    PyObject *first_obj, *out = NULL, *result = NULL;
    uint64_t first;
    Tso t;
    if (!PyArg_ParseTuple(args, "y*pnnkOK", &in, &v4, &mss, &mtu, &remote, &first_obj,
                          &max_count))
        return NULL;
    if (counter_arg(first_obj, &first) < 0) goto done;
    if (mtu < 0 || remote > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_ValueError, "seal_tso: bad mtu or receiver index");
        goto done;
    }
    if (tso_parse(&t, in.buf, in.len, v4, mss) < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t last = t.headers + tso_payload(&t, t.count - 1);
    Py_ssize_t full = t.count > 1 ? t.headers + t.mss : last; /* all but the last */
    if ((uint64_t)t.count > max_count || first > UINT64_MAX - (uint64_t)t.count ||
        (mtu && (full > mtu || last > mtu))) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t padded = padded_length(full, mtu), last_padded = padded_length(last, mtu);
    Py_ssize_t size = MESSAGE_MIN + padded;
    out = PyByteArray_FromStringAndSize(NULL, (t.count - 1) * size + MESSAGE_MIN + last_padded);
    if (out == NULL || claim(self) < 0) goto done;
    uint8_t *dst = (uint8_t *)PyByteArray_AS_STRING(out);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < t.count && !failed; i++) {
        uint8_t *message = dst + i * size, *plain = message + HEADER_SIZE;
        Py_ssize_t n = i == t.count - 1 ? last : full, m = i == t.count - 1 ? last_padded : padded;
        put_le32(message, MESSAGE_TRANSPORT);
        put_le32(message + 4, (uint32_t)remote);
        put_le64(message + 8, first + (uint64_t)i);
        tso_write(&t, i, plain);
        memset(plain + n, 0, (size_t)(m - n));
        failed = seal_one(self->ctx, first + (uint64_t)i, plain, (int)m, plain) < 0;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (failed)
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
    else
        result = Py_BuildValue("Onn", out, size, t.count);
done:
    Py_XDECREF(out);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef sealer_methods[] = {
    {"seal", (PyCFunction)sealer_seal, METH_VARARGS,
     "seal(counter, plaintext) -> ciphertext and tag"},
    {"seal_message", (PyCFunction)sealer_seal_message, METH_VARARGS,
     "seal_message(packet, mtu, remote_index, counter) -> one whole transport message"},
    {"seal_run", (PyCFunction)sealer_seal_run, METH_VARARGS,
     "seal_run(plain, stride, count, padded, last, remote_index, first_counter, out)"},
    {"seal_tso", (PyCFunction)sealer_seal_tso, METH_VARARGS,
     "seal_tso(packet, v4, mss, mtu, remote_index, first_counter, max_count)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vnet._datapath.Sealer",
    .tp_basicsize = sizeof(Aead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sealer(key): ChaCha20-Poly1305 encryption with one key, WireGuard's nonces.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sealer_init,
    .tp_dealloc = (destructor)aead_dealloc,
    .tp_methods = sealer_methods,
};

/* --- Opener ------------------------------------------------------------------------- */

static int opener_init(Aead *self, PyObject *args, PyObject *kwds) {
    (void)kwds;
    return aead_init_key(self, args, 0);
}

/* open_into(counter, ciphertext, out) -> bool: out gets len(ciphertext) - 16 bytes
 * (zeros when it does not authenticate). */
static PyObject *opener_open_into(Aead *self, PyObject *args) {
    PyObject *counter_obj;
    Py_buffer sealed, out;
    uint64_t counter;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "Oy*w*", &counter_obj, &sealed, &out)) return NULL;
    if (counter_arg(counter_obj, &counter) < 0) goto done;
    if (sealed.len < TAG_SIZE || sealed.len > MAX_MESSAGE || out.len != sealed.len - TAG_SIZE) {
        PyErr_SetString(PyExc_ValueError, "open_into: wrong lengths");
        goto done;
    }
    if (claim(self) < 0) goto done;
    int ok = open_one(self->ctx, counter, sealed.buf, (int)sealed.len, out.buf) == 0;
    self->busy = 0;
    result = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&sealed);
    PyBuffer_Release(&out);
    return result;
}

/* open(counter, ciphertext) -> plaintext, or None when it does not authenticate. */
static PyObject *opener_open(Aead *self, PyObject *args) {
    PyObject *counter_obj;
    Py_buffer sealed;
    uint64_t counter;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "Oy*", &counter_obj, &sealed)) return NULL;
    if (counter_arg(counter_obj, &counter) < 0) goto done;
    if (sealed.len < TAG_SIZE || sealed.len > MAX_MESSAGE) {
        result = Py_NewRef(Py_None); /* too short to hold a tag: does not authenticate */
        goto done;
    }
    if (claim(self) < 0) goto done;
    result = PyBytes_FromStringAndSize(NULL, sealed.len - TAG_SIZE);
    if (result != NULL &&
        open_one(self->ctx, counter, sealed.buf, (int)sealed.len,
                 (uint8_t *)PyBytes_AS_STRING(result)) < 0)
        Py_SETREF(result, Py_NewRef(Py_None));
    self->busy = 0;
done:
    PyBuffer_Release(&sealed);
    return result;
}

/* open_run(data, size, prefix, out, stride) -> (counters, failed) or None.
 * `data` holds transport messages `size` bytes apart, the last possibly shorter; each
 * must begin with the 8 bytes `prefix` (type 4 and one receiver index, little-endian),
 * else None and nothing is done. Message i is opened into row i of `out` (at i * stride,
 * len - 32 bytes); `failed` lists the rows that did not authenticate (left zero). */
static PyObject *opener_open_run(Aead *self, PyObject *args) {
    Py_buffer data, out;
    Py_ssize_t size, stride;
    unsigned long long prefix;
    PyObject *result = NULL, *counters = NULL, *failed_list = NULL;
    uint64_t *values = NULL;
    uint8_t *bad = NULL;
    if (!PyArg_ParseTuple(args, "y*nKw*n", &data, &size, &prefix, &out, &stride)) return NULL;
    if (size < MESSAGE_MIN || size > MAX_MESSAGE || stride < size - MESSAGE_MIN ||
        data.len < MESSAGE_MIN) {
        PyErr_SetString(PyExc_ValueError, "open_run: inconsistent sizes");
        goto done;
    }
    Py_ssize_t count = (data.len + size - 1) / size;
    Py_ssize_t last = data.len - (count - 1) * size;
    if (out.len < count * stride) {
        PyErr_SetString(PyExc_ValueError, "open_run: the rows buffer is too small");
        goto done;
    }
    const uint8_t *in = data.buf;
    if (last < MESSAGE_MIN) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (get_le64(in + i * size) != (uint64_t)prefix) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    values = PyMem_Malloc((size_t)count * sizeof(uint64_t));
    bad = PyMem_Calloc((size_t)count, 1);
    if (values == NULL || bad == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (claim(self) < 0) goto done;
    uint8_t *rows = out.buf;
    Py_ssize_t nfailed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *message = in + i * size;
        int n = (int)((i == count - 1 ? last : size) - HEADER_SIZE);
        values[i] = get_le64(message + 8);
        if (open_one(self->ctx, values[i], message + HEADER_SIZE, n, rows + i * stride) < 0) {
            bad[i] = 1;
            nfailed++;
        }
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    counters = PyList_New(count);
    failed_list = PyList_New(nfailed);
    if (counters == NULL || failed_list == NULL) goto done;
    for (Py_ssize_t i = 0, j = 0; i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(values[i]);
        if (value == NULL) goto done;
        PyList_SET_ITEM(counters, i, value);
        if (bad[i]) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL) goto done;
            PyList_SET_ITEM(failed_list, j++, index);
        }
    }
    result = PyTuple_Pack(2, counters, failed_list);
done:
    Py_XDECREF(counters);
    Py_XDECREF(failed_list);
    PyMem_Free(values);
    PyMem_Free(bad);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef opener_methods[] = {
    {"open", (PyCFunction)opener_open, METH_VARARGS,
     "open(counter, ciphertext) -> plaintext or None"},
    {"open_into", (PyCFunction)opener_open_into, METH_VARARGS,
     "open_into(counter, ciphertext, out) -> bool"},
    {"open_run", (PyCFunction)opener_open_run, METH_VARARGS,
     "open_run(data, size, prefix, out, stride) -> (counters, failed) or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OpenerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vnet._datapath.Opener",
    .tp_basicsize = sizeof(Aead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Opener(key): ChaCha20-Poly1305 decryption with one key, WireGuard's nonces.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)opener_init,
    .tp_dealloc = (destructor)aead_dealloc,
    .tp_methods = opener_methods,
};

/* split_tcp(packet, v4, mss, align, prefix=b"", packed=False) -> (rows, stride, lengths)
 * or None. A TSO super-packet (IPv4 or IPv6 TCP, no virtio_net_hdr) cut into segments of
 * `mss` payload bytes (tso_write), behind `prefix` (a link or tunnel header), at
 * i * stride: a multiple of `align` and of 4 with bytes past a segment zero, or, `packed`,
 * exactly one segment long, the last one shorter - one UDP GSO send's buffer. None when
 * the packet is not one this handles: the Python reference then names the problem. */
static PyObject *split_tcp(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer in, prefix = {0};
    int v4, packed = 0;
    Py_ssize_t mss, align;
    PyObject *result = NULL, *rows = NULL, *lengths = NULL;
    Tso t;
    if (!PyArg_ParseTuple(args, "y*pnn|y*p", &in, &v4, &mss, &align, &prefix, &packed))
        return NULL;
    Py_ssize_t plen = prefix.buf != NULL ? prefix.len : 0;
    if (tso_parse(&t, in.buf, in.len, v4, mss) < 0 || align < 1 || align > 4096 || plen > 256)
        goto unsupported;
    Py_ssize_t count = t.count, stride = plen + t.headers + mss, size;
    if (packed) {
        size = (count - 1) * stride + plen + t.headers + tso_payload(&t, count - 1);
    } else {
        stride = (stride + align - 1) / align * align;
        stride = (stride + 3) / 4 * 4;
        size = count * stride;
    }
    const uint8_t *pre = plen ? prefix.buf : NULL;
    rows = PyByteArray_FromStringAndSize(NULL, size);
    lengths = PyList_New(count);
    if (rows == NULL || lengths == NULL) goto done;
    uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(rows);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        uint8_t *row = out + i * stride;
        Py_ssize_t used = plen + t.headers + tso_payload(&t, i);
        if (plen) memcpy(row, pre, (size_t)plen);
        tso_write(&t, i, row + plen);
        if (!packed) memset(row + used, 0, (size_t)(stride - used));
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *n = PyLong_FromSsize_t(plen + t.headers + tso_payload(&t, i));
        if (n == NULL) goto done;
        PyList_SET_ITEM(lengths, i, n);
    }
    result = Py_BuildValue("OnO", rows, stride, lengths);
    goto done;
unsupported:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(rows);
    Py_XDECREF(lengths);
    PyBuffer_Release(&in);
    if (prefix.buf != NULL) PyBuffer_Release(&prefix);
    return result;
}

/* --- GRO of one flow (the rules of vnet.packet.gro._one_flow) ---------------------------- */

#define ACK 0x10
#define MAX_SEGMENTS 64
#define MAX_SUPER 65535
#define MAX_HEADERS (40 + 60)

static uint32_t get_be16(const uint8_t *p) { return (uint32_t)(p[0] << 8 | p[1]); }

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes of a segment's headers that may differ from the first segment's: in every
 * segment the IPv4 id and header checksum and the TCP sequence number and checksum; in
 * the last one also the IP length and the TCP flags (PSH). */
static int varies(Py_ssize_t i, Py_ssize_t iph, int last) {
    Py_ssize_t t = i - iph;
    if (t == 4 || t == 5 || t == 6 || t == 7 || t == 16 || t == 17) return 1;
    if (last && t == 13) return 1;
    if (iph == 20) return i == 4 || i == 5 || i == 10 || i == 11 || (last && (i == 2 || i == 3));
    return last && (i == 4 || i == 5);
}

/* A segment's TCP checksum verifies (and an IPv4 header's). */
static int checksums_ok(const uint8_t *row, Py_ssize_t length, Py_ssize_t iph) {
    Py_ssize_t from = iph == 20 ? 12 : 8;
    uint64_t s = sum16(row + from, length - from) + IPPROTO_TCP_ + (uint64_t)(length - iph);
    if (s % 0xFFFF) return 0;
    return iph != 20 || sum16(row, 20) % 0xFFFF == 0;
}

/* The one-flow merge over `count` packets at rows[i] of lens[i] bytes (count >= 2):
 * (packet, iph, headers, gso_size), the packet behind the `plen` bytes of `prefix`;
 * Py_None when the run is anything else (new references), NULL with an exception set.
 * `limit`: how many bytes of the first packet's headers may be read. */
static PyObject *merge_flow(const uint8_t *const *rows, const Py_ssize_t *lens, Py_ssize_t count,
                            Py_ssize_t limit, const uint8_t *prefix, Py_ssize_t plen) {
    const uint8_t *head = rows[0];
    Py_ssize_t n = lens[0], last = count - 1, n_last = lens[last], iph, ip_length;
    for (Py_ssize_t i = 1; i < last; i++)
        if (lens[i] != n) return Py_NewRef(Py_None);
    if (n < 40) return Py_NewRef(Py_None);
    if (head[0] == 0x45 && head[9] == IPPROTO_TCP_ && !((head[6] & 0x3F) | head[7])) {
        iph = 20;
        ip_length = get_be16(head + 2);
    } else if (head[0] >> 4 == 6 && head[6] == IPPROTO_TCP_) {
        iph = 40;
        ip_length = 40 + get_be16(head + 4);
    } else {
        return Py_NewRef(Py_None);
    }
    uint8_t offset_byte = head[iph + 12];
    Py_ssize_t headers = iph + (offset_byte >> 4) * 4, size = n - headers;
    if (offset_byte & 0x0F || offset_byte < 0x50 || ip_length != n || size <= 0 ||
        headers > (limit < MAX_HEADERS ? limit : MAX_HEADERS) || head[iph + 13] != ACK)
        return Py_NewRef(Py_None);
    const uint8_t *tail = rows[last];
    Py_ssize_t tail_length = iph == 20 ? get_be16(tail + 2) : 40 + get_be16(tail + 4);
    if (tail_length != n_last || !(headers < n_last && n_last <= n) ||
        (tail[iph + 13] & (0xFF ^ PSH)) != ACK)
        return Py_NewRef(Py_None);
    for (Py_ssize_t i = 1; i < count; i++) {
        const uint8_t *row = rows[i];
        for (Py_ssize_t b = 0; b < headers; b++)
            if (row[b] != head[b] && !varies(b, iph, i == last)) return Py_NewRef(Py_None);
        if (get_be32(row + iph + 4) - get_be32(rows[i - 1] + iph + 4) != (uint32_t)size)
            return Py_NewRef(Py_None);
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (!checksums_ok(rows[i], lens[i], iph)) return Py_NewRef(Py_None);
    Py_ssize_t payload = size * last + n_last - headers;
    if (headers + payload > MAX_SUPER) return Py_NewRef(Py_None);
    PyObject *packet = PyBytes_FromStringAndSize(NULL, plen + headers + payload);
    if (packet == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(packet);
    if (plen) memcpy(out, prefix, (size_t)plen);
    out += plen;
    uint32_t tcp_len = (uint32_t)(headers - iph + payload);
    memcpy(out, head, (size_t)headers);
    if (iph == 20) {
        put_be16(out + 2, (uint32_t)iph + tcp_len);
        out[10] = out[11] = 0;
        put_be16(out + 10, fold_checksum(sum16(out, 20)));
    } else {
        put_be16(out + 4, tcp_len);
    }
    out[iph + 13] = tail[iph + 13];
    uint64_t pseudo = (iph == 20 ? sum16(out + 12, 8) : sum16(out + 8, 32)) + IPPROTO_TCP_ + tcp_len;
    put_be16(out + iph + 16, (uint16_t)~fold_checksum(pseudo));
    uint8_t *dst = out + headers;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t take = (i == last ? n_last : n) - headers;
        memcpy(dst, rows[i] + headers, (size_t)take);
        dst += take;
    }
    PyObject *result = Py_BuildValue("Onnn", packet, iph, headers, size);
    Py_DECREF(packet);
    return result;
}

/* coalesce_one_flow(rows, stride, lengths) -> (packet, iph, headers, gso_size) or None.
 * A GRO run laid out in rows (at least two; stride >= 64) that is one flow's TCP
 * segments in order - headers equal but for what `varies`, plain ACK (PSH on the last
 * only), all but the last of one size, sequence numbers following, checksums verifying -
 * merged into one super-packet with fresh lengths and IPv4 checksum and the TCP
 * checksum field holding the pseudo-header sum (NEEDS_CSUM). None for anything else. */
static PyObject *coalesce_one_flow(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer in;
    Py_ssize_t stride;
    PyObject *lengths_obj, *result = NULL;
    Py_ssize_t lens[MAX_SEGMENTS];
    const uint8_t *rows[MAX_SEGMENTS];
    if (!PyArg_ParseTuple(args, "y*nO!", &in, &stride, &PyList_Type, &lengths_obj)) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(lengths_obj);
    if (count < 2 || count > MAX_SEGMENTS || stride < 64 || in.len < count * stride) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        lens[i] = PyLong_AsSsize_t(PyList_GET_ITEM(lengths_obj, i));
        if (lens[i] == -1 && PyErr_Occurred()) goto done;
        if (lens[i] < 0 || lens[i] > stride) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        rows[i] = (const uint8_t *)in.buf + i * stride;
    }
    result = merge_flow(rows, lens, count, stride, NULL, 0);
done:
    PyBuffer_Release(&in);
    return result;
}

/* coalesce_datagrams(data, size, skip, keep=0) -> (packet, iph, headers, gso_size) or
 * None. A UDP GRO run - datagrams `size` bytes apart, the last possibly shorter - whose
 * datagrams all begin with the same `skip` bytes (a tunnel and link header): the packets
 * after those bytes merged by the rules of coalesce_one_flow, straight from the receive
 * buffer, behind the last `keep` of those bytes (the link header, so that the result is
 * the frame to write). None for anything else. */
static PyObject *coalesce_datagrams(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer in;
    Py_ssize_t size, skip, keep = 0;
    PyObject *result = NULL;
    Py_ssize_t lens[MAX_SEGMENTS];
    const uint8_t *rows[MAX_SEGMENTS];
    if (!PyArg_ParseTuple(args, "y*nn|n", &in, &size, &skip, &keep)) return NULL;
    const uint8_t *data = in.buf;
    Py_ssize_t count = size > 0 ? (in.len + size - 1) / size : 0;
    int ok = skip >= 0 && skip < size && count >= 2 && count <= MAX_SEGMENTS &&
             in.len - (count - 1) * size > skip && keep >= 0 && keep <= skip;
    for (Py_ssize_t i = 0; ok && i < count; i++) {
        const uint8_t *datagram = data + i * size;
        ok = memcmp(datagram, data, (size_t)skip) == 0;
        rows[i] = datagram + skip;
        lens[i] = (i == count - 1 ? in.len - i * size : size) - skip;
    }
    result = ok ? merge_flow(rows, lens, count, size - skip, data + skip - keep, keep)
                : Py_NewRef(Py_None);
    PyBuffer_Release(&in);
    return result;
}

/* --- message headers ------------------------------------------------------------------ */

/* wireguard_datagrams(data, size) -> list[int]: of the datagrams of `size` bytes back to
 * back in `data` (the last may be shorter), the indices of those whose header passes
 * messages.message_type: type 1, 2 or 3 at its exact size, or type 4 of at least 32 bytes,
 * reserved bytes zero. A flood of anything else is dropped here, not one by one. */
static PyObject *wireguard_datagrams(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer in;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n", &in, &size)) return NULL;
    PyObject *out = NULL;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "wireguard_datagrams: size must be positive");
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL) goto done;
    const uint8_t *data = in.buf;
    for (Py_ssize_t i = 0, start = 0; start < in.len; i++, start += size) {
        Py_ssize_t n = in.len - start < size ? in.len - start : size;
        if (n < 4 || data[start + 1] || data[start + 2] || data[start + 3]) continue;
        uint8_t kind = data[start];
        if ((kind == 1 && n == 148) || (kind == 2 && n == 92) || (kind == 3 && n == 64) ||
            (kind == 4 && n >= 32)) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(out, index) < 0) {
                Py_XDECREF(index);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(index);
        }
    }
done:
    PyBuffer_Release(&in);
    return out;
}

/* --- rows --------------------------------------------------------------------------- */

/* rows_agree(buf, stride, count, mask) -> bool: rows 1..count-1 (at i * stride) equal row
 * 0 in every bit `mask` sets over its len(mask) first bytes. */
static PyObject *rows_agree(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer in, mask;
    Py_ssize_t stride, count;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nny*", &in, &stride, &count, &mask)) return NULL;
    if (count < 0 || mask.len > stride || (count > 0 && in.len < (count - 1) * stride + mask.len)) {
        PyErr_SetString(PyExc_ValueError, "rows_agree: the rows do not fit the buffer");
        goto done;
    }
    const uint8_t *rows = in.buf, *bits = mask.buf;
    int agree = 1;
    for (Py_ssize_t i = 1; i < count && agree; i++)
        for (Py_ssize_t b = 0; b < mask.len; b++)
            if ((rows[i * stride + b] ^ rows[b]) & bits[b]) {
                agree = 0;
                break;
            }
    result = PyBool_FromLong(agree);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&mask);
    return result;
}

/* zero_span(buf, stride, count, start, end): bytes start..end of rows 0..count-1 zeroed. */
static PyObject *zero_span(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer out;
    Py_ssize_t stride, count, start, end;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*nnnn", &out, &stride, &count, &start, &end)) return NULL;
    if (count < 0 || start < 0 || end < start || end > stride ||
        (count > 0 && out.len < (count - 1) * stride + end)) {
        PyErr_SetString(PyExc_ValueError, "zero_span: the span does not fit the rows");
    } else {
        for (Py_ssize_t i = 0; i < count; i++)
            memset((uint8_t *)out.buf + i * stride + start, 0, (size_t)(end - start));
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef module_methods[] = {
    {"split_tcp", split_tcp, METH_VARARGS,
     "split_tcp(packet, v4, mss, align, prefix=b'', packed=False) -> (rows, stride, lengths)"
     " or None"},
    {"coalesce_one_flow", coalesce_one_flow, METH_VARARGS,
     "coalesce_one_flow(rows, stride, lengths) -> (packet, iph, headers, gso_size) or None"},
    {"rows_agree", rows_agree, METH_VARARGS,
     "rows_agree(buf, stride, count, mask) -> bool"},
    {"zero_span", zero_span, METH_VARARGS, "zero_span(buf, stride, count, start, end)"},
    {"wireguard_datagrams", wireguard_datagrams, METH_VARARGS,
     "wireguard_datagrams(data, size) -> indices of the datagrams that look like messages"},
    {"coalesce_datagrams", coalesce_datagrams, METH_VARARGS,
     "coalesce_datagrams(data, size, skip, keep=0) -> (packet, iph, headers, gso_size) or None"},
    {NULL, NULL, 0, NULL},
};

/* --- the module ---------------------------------------------------------------------- */

static struct PyModuleDef datapath_module = {
    PyModuleDef_HEAD_INIT, "vnet._datapath",
    "The data path's per-packet loops in C (see vnet.wireguard.aead, vnet.packet.gso).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__datapath(void) {
    if (PyType_Ready(&SealerType) < 0 || PyType_Ready(&OpenerType) < 0) return NULL;
    PyObject *module = PyModule_Create(&datapath_module);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Sealer", (PyObject *)&SealerType) < 0 ||
        PyModule_AddObjectRef(module, "Opener", (PyObject *)&OpenerType) < 0 ||
        PyModule_AddStringConstant(module, "LIBCRYPTO", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
