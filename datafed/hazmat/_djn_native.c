/*
 * Native fixed-base exponentiation modulo n^2 for DJN encryption randomness.
 *
 * This is the hot loop of datafed.hazmat._djn.FixedBaseTable (keys with a root n)
 * moved out of the interpreter.  The table is one contiguous array of GMP limbs;
 * entry (i, j) = base^(j * 2^(w*i)) mod n^2, and a power is the product of one entry
 * per window, with no squarings.
 *
 * Each entry y, a unit of Z_{n^2}, is kept as the pair (y0, d) with y0 = y mod n and
 * d = y1 / y0 mod n for y = y0 + y1*n; then y = y0 * (1 + d*n) mod n^2, and since
 * (1 + d*n)(1 + d'*n) = 1 + (d + d')*n mod n^2, a product of entries is
 *
 *     prod y_i = (prod y0_i mod n^2) * (1 + (sum d_i)*n)   mod n^2.
 *
 * The sum costs additions only, and each factor y0_i < n is half the size of n^2.  The
 * product of the y0_i runs in Montgomery form modulo N = n^2 with R = 2^(64L) (L the
 * limbs of n): mont_low multiplies by one y0 and divides by R, a product of 2L by L
 * limbs and L multiply-adds of N (no division, no quotient to estimate), where a
 * product modulo n^2 in base n takes three products and two divisions by n (nadic_mul,
 * datafed.hazmat._djn.nadic_mul).  So that the R^-1 of each step cancels, the table
 * holds y = x*R mod n^2 for x = base^(j * 2^(w*i)): k entries give
 * prod (x_i R) / (1 + sum d_i n) * R^-(k-1), one more division by R at the end leaves
 * prod x_i / (1 + sum d_i n), and the final factor 1 + (sum d_i + m)*n restores
 * prod x_i * (1 + m*n) -- the plaintext m of a Paillier encryption folded in for one
 * addition.  Montgomery's method needs N odd: n must be odd (every Paillier modulus is).
 * Building the table inverts every y0 of a row at once (Montgomery's batch inversion:
 * one inversion and three products each).
 * The Python module draws the exponent (secrets) and checks every argument's size;
 * this file checks them again and never reads or writes outside the buffers it is
 * given.
 *
 * Only GMP's documented mpn interface is used (mpn_mul, mpn_mul_n, mpn_sqr,
 * mpn_addmul_1, mpn_tdiv_qr, mpn_add, mpn_add_n, mpn_sub_n, mpn_cmp; GMP manual
 * section 8, "Low-level Functions").  Like the pure-Python path,
 * a table lookup depends on the exponent's digits, so this is not constant-time
 * against an attacker sharing the core's caches (docs/paillier.md).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The widest modulus n served: 16384 bits (n^2 = 32768 bits). */
#define MAX_LIMBS 256
/* Windows of 1 to 16 bits. */
#define MAX_WINDOW 16

/* Scratch limbs nadic_mul needs for an L-limb n. */
#define SCRATCH_LIMBS(L) (9 * (L) + 8)

/*
 * out = c * a mod n^2, every value given as two L-limb base-n digits (low, high),
 * each in [0, n).  With c0*a0 = q*n + r the product is r + ((q + c0*a1 + c1*a0) mod n)*n.
 * out may be c or a (both are read before out is written).  scratch holds
 * SCRATCH_LIMBS(L) limbs.
 */
static void nadic_mul(mp_limb_t *out, const mp_limb_t *c, const mp_limb_t *a,
                      const mp_limb_t *n, mp_size_t L, mp_limb_t *scratch)
{
    mp_limb_t *t = scratch;            /* 2L: c0*a0 */
    mp_limb_t *u = t + 2 * L;          /* 2L: c0*a1, then the sum */
    mp_limb_t *v = u + 2 * L + 1;      /* 2L: c1*a0 */
    mp_limb_t *q = v + 2 * L;          /* L+2: quotients */
    const mp_limb_t *c0 = c, *c1 = c + L, *a0 = a, *a1 = a + L;

    mpn_mul_n(t, c0, a0, L);
    mpn_mul_n(u, c0, a1, L);
    mpn_mul_n(v, c1, a0, L);
    /* Every read of c and a is done: out may now be written. */
    mpn_tdiv_qr(q, out, 0, t, 2 * L, n, L); /* q = floor(c0*a0 / n): L+1 limbs */
    u[2 * L] = mpn_add_n(u, u, v, 2 * L);
    mpn_add(u, u, 2 * L + 1, q, L + 1);      /* < 2n^2 + n: no carry out */
    mpn_tdiv_qr(q, out + L, 0, u, 2 * L + 1, n, L);
}

/* -N^-1 mod 2^64 for odd N (Newton's iteration doubles the correct bits each time). */
static mp_limb_t neg_inverse(mp_limb_t n0)
{
    mp_limb_t inv = n0; /* correct to 3 bits: n0 * n0 = 1 mod 8 */
    for (int i = 0; i < 5; i++)
        inv *= 2 - n0 * inv;
    return -inv;
}

/*
 * P = P * y0 / R mod N for 0 <= P < N (2L limbs, N = n^2 odd), y0 < R = 2^(64L) (L limbs):
 * T = P*y0 < N*R, then L times add the multiple of N that clears T's lowest limb
 * (Montgomery's REDC by one limb at a time), leaving (T + M*N) / R < 2N, and subtract N
 * once if needed.  scratch holds 3L limbs.
 */
static void mont_low(mp_limb_t *P, const mp_limb_t *y0, const mp_limb_t *N, mp_limb_t ninv,
                     mp_size_t L, mp_limb_t *scratch)
{
    mp_limb_t *t = scratch, *up = scratch;
    mpn_mul(t, P, 2 * L, y0, L);
    for (mp_size_t j = 0; j < L; j++, up++)
        up[0] = mpn_addmul_1(up, N, 2 * L, up[0] * ninv); /* up[0] is now 0: keep the carry */
    /* the carry of step j belongs at limb j + 2L */
    mp_limb_t cy = mpn_add_n(t + 2 * L, t + 2 * L, t, L);
    if (cy || mpn_cmp(t + L, N, 2 * L) >= 0)
        mpn_sub_n(P, t + L, N, 2 * L);
    else
        memcpy(P, t + L, 2 * L * sizeof(mp_limb_t));
}

static void limbs_from_mpz(mp_limb_t *dst, const mpz_t z, mp_size_t L)
{
    size_t size = mpz_size(z);
    memcpy(dst, mpz_limbs_read(z), size * sizeof(mp_limb_t));
    memset(dst + size, 0, (L - size) * sizeof(mp_limb_t));
}

/*
 * Turn a row's entries 1 .. count-1 from base-n digits (y0, y1) into (y0, y1/y0 mod n)
 * in place (entry 0 is never read).  Returns -1 if some y0 is not a unit.
 */
static int row_to_delta(mp_limb_t *row, mp_size_t count, const mp_limb_t *n, mp_size_t L)
{
    const mp_size_t width = 2 * L;
    mpz_t nz, inv, tmp, x;
    mpz_t *prefix = malloc((size_t)count * sizeof(mpz_t));
    int ok = 1;

    if (prefix == NULL)
        return -2;
    mpz_roinit_n(nz, n, L);
    mpz_inits(inv, tmp, NULL);
    for (mp_size_t j = 1; j < count; j++) {
        mpz_init(prefix[j]);
        mpz_roinit_n(x, row + j * width, L);
        if (j == 1)
            mpz_set(prefix[j], x);
        else {
            mpz_mul(prefix[j], prefix[j - 1], x);
            mpz_mod(prefix[j], prefix[j], nz);
        }
    }
    if (count > 1 && !mpz_invert(inv, prefix[count - 1], nz))
        ok = 0;
    for (mp_size_t j = count - 1; ok && j >= 1; j--) {
        mp_limb_t *entry = row + j * width;
        /* inv = 1 / (x0_1 ... x0_j); 1 / x0_j = inv * prefix[j - 1] */
        if (j > 1) {
            mpz_mul(tmp, inv, prefix[j - 1]);
            mpz_mod(tmp, tmp, nz);
        } else
            mpz_set(tmp, inv);
        mpz_roinit_n(x, entry, L);
        mpz_mul(inv, inv, x);
        mpz_mod(inv, inv, nz);
        mpz_roinit_n(x, entry + L, L);
        mpz_mul(tmp, tmp, x);
        mpz_mod(tmp, tmp, nz);
        limbs_from_mpz(entry + L, tmp, L);
    }
    for (mp_size_t j = 1; j < count; j++)
        mpz_clear(prefix[j]);
    mpz_clears(inv, tmp, NULL);
    free(prefix);
    return ok ? 0 : -1;
}

/* Limb buffers must be limb-aligned (bytes and bytearray always are; a memoryview slice
 * may not be). */
static int check_aligned(const Py_buffer *b, const char *what)
{
    if ((uintptr_t)b->buf % sizeof(mp_limb_t) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be aligned to 8 bytes", what);
        return -1;
    }
    return 0;
}

static int check_modulus(const Py_buffer *n, mp_size_t *L)
{
    if (check_aligned(n, "modulus") < 0)
        return -1;
    if (n->len <= 0 || n->len % sizeof(mp_limb_t) != 0 ||
        n->len / (Py_ssize_t)sizeof(mp_limb_t) > MAX_LIMBS) {
        PyErr_SetString(PyExc_ValueError, "modulus must be 1 to 256 whole limbs");
        return -1;
    }
    *L = (mp_size_t)(n->len / (Py_ssize_t)sizeof(mp_limb_t));
    if (((const mp_limb_t *)n->buf)[*L - 1] == 0) {
        PyErr_SetString(PyExc_ValueError, "modulus' top limb must not be zero");
        return -1;
    }
    if ((((const mp_limb_t *)n->buf)[0] & 1) == 0 || (*L == 1 && ((const mp_limb_t *)n->buf)[0] < 3)) {
        PyErr_SetString(PyExc_ValueError, "modulus must be odd and at least 3");
        return -1;
    }
    return 0;
}

static int check_shape(Py_ssize_t rows, int window, mp_size_t L, Py_ssize_t *entries)
{
    if (window < 1 || window > MAX_WINDOW || rows < 1 || rows > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "window must be 1 to 16 bits and rows 1 to 2^20");
        return -1;
    }
    *entries = rows << window;
    if (*entries > PY_SSIZE_T_MAX / (Py_ssize_t)(2 * L * sizeof(mp_limb_t))) {
        PyErr_SetString(PyExc_OverflowError, "table too large");
        return -1;
    }
    return 0;
}

/* build(n, base, rows, window) -> bytearray: the whole table. */
static PyObject *djn_build(PyObject *self, PyObject *args)
{
    Py_buffer n, base;
    Py_ssize_t rows, entries;
    int window;
    mp_size_t L;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*ni", &n, &base, &rows, &window))
        return NULL;
    if (check_modulus(&n, &L) < 0 || check_shape(rows, window, L, &entries) < 0)
        goto done;
    if (check_aligned(&base, "base") < 0)
        goto done;
    if (base.len != (Py_ssize_t)(2 * L * sizeof(mp_limb_t))) {
        PyErr_SetString(PyExc_ValueError, "base must be two digits of the modulus' size");
        goto done;
    }
    result = PyByteArray_FromStringAndSize(NULL, entries * 2 * L * sizeof(mp_limb_t));
    if (result == NULL)
        goto done;
    {
        mp_limb_t *table = (mp_limb_t *)PyByteArray_AS_STRING(result);
        mp_limb_t *scratch = PyMem_RawMalloc((SCRATCH_LIMBS(L) + 4 * L) * sizeof(mp_limb_t));
        const mp_limb_t *nl = n.buf;
        const mp_size_t width = 2 * L, per_row = (mp_size_t)1 << window;
        if (scratch == NULL) {
            Py_CLEAR(result);
            PyErr_NoMemory();
            goto done;
        }
        mp_limb_t *g = scratch + SCRATCH_LIMBS(L);
        mp_limb_t *r = g + width; /* R mod n^2 in base n: every row starts from it */
        int status = 0;
        memcpy(g, base.buf, width * sizeof(mp_limb_t));
        {
            mpz_t nz, rz, hi, lo;
            mpz_roinit_n(nz, nl, L);
            mpz_inits(rz, hi, lo, NULL);
            mpz_setbit(rz, 64 * L);
            mpz_mul(hi, nz, nz);
            mpz_mod(rz, rz, hi);
            mpz_fdiv_qr(hi, lo, rz, nz);
            limbs_from_mpz(r, lo, L);
            limbs_from_mpz(r + L, hi, L);
            mpz_clears(rz, hi, lo, NULL);
        }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < rows && status == 0; i++) {
            mp_limb_t *row = table + (mp_size_t)i * per_row * width;
            memcpy(row, r, width * sizeof(mp_limb_t)); /* entry j = R * g^j */
            for (mp_size_t j = 1; j < per_row; j++)
                nadic_mul(row + j * width, row + (j - 1) * width, g, nl, L, scratch);
            for (int k = 0; k < window; k++) /* next row's g: g^(2^w) */
                nadic_mul(g, g, g, nl, L, scratch);
            status = row_to_delta(row, per_row, nl, L);
        }
        Py_END_ALLOW_THREADS
        PyMem_RawFree(scratch);
        if (status != 0) {
            Py_CLEAR(result);
            if (status == -2)
                PyErr_NoMemory();
            else
                PyErr_SetString(PyExc_ValueError, "base is not a unit modulo n^2");
        }
    }
done:
    PyBuffer_Release(&n);
    PyBuffer_Release(&base);
    return result;
}

/* Digit i of a little-endian exponent: bits [w*i, w*i + w), zero past its end. */
static unsigned exponent_digit(const unsigned char *e, Py_ssize_t len, Py_ssize_t i, int w)
{
    Py_ssize_t bit = i * w, byte = bit / 8;
    unsigned long acc = 0;
    for (int k = 0; k < 4 && byte + k < len; k++)
        acc |= (unsigned long)e[byte + k] << (8 * k);
    return (unsigned)((acc >> (bit % 8)) & ((1u << w) - 1));
}

/*
 * power(table, n, rows, window, exponent[, shift]) -> bytes: 2L limbs of
 * base^exponent * (1 + n)^shift mod n^2, shift (L limbs, below n) zero if absent.
 * (1 + n)^m = 1 + m*n mod n^2 is the pair (1, m), so a Paillier plaintext m costs the
 * encryption one addition.
 */
static PyObject *djn_power(PyObject *self, PyObject *args)
{
    Py_buffer table, n, exponent, shift = {0};
    Py_ssize_t rows, entries;
    int window;
    mp_size_t L;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*niy*|y*", &table, &n, &rows, &window, &exponent, &shift))
        return NULL;
    if (check_modulus(&n, &L) < 0 || check_shape(rows, window, L, &entries) < 0)
        goto done;
    if (check_aligned(&table, "table") < 0 || (shift.buf != NULL && check_aligned(&shift, "shift") < 0))
        goto done;
    if (table.len != (Py_ssize_t)(entries * 2 * L * sizeof(mp_limb_t))) {
        PyErr_SetString(PyExc_ValueError, "table size does not match rows, window and modulus");
        goto done;
    }
    if (exponent.len > (rows * window + 7) / 8 ||
        (exponent.len == (rows * window + 7) / 8 && (rows * window) % 8 != 0 &&
         ((const unsigned char *)exponent.buf)[exponent.len - 1] >> ((rows * window) % 8))) {
        PyErr_SetString(PyExc_ValueError, "exponent longer than the table serves");
        goto done;
    }
    if (shift.buf != NULL && (shift.len != n.len ||
                              mpn_cmp(shift.buf, n.buf, L) >= 0)) {
        PyErr_SetString(PyExc_ValueError, "shift must be below n, in the modulus' size");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, 2 * L * sizeof(mp_limb_t));
    if (result == NULL)
        goto done;
    {
        mp_limb_t *out = (mp_limb_t *)PyBytes_AS_STRING(result);
        mp_limb_t *scratch = PyMem_RawMalloc((SCRATCH_LIMBS(L) + 10 * L + 3) * sizeof(mp_limb_t));
        const mp_limb_t *tl = table.buf, *nl = n.buf;
        const unsigned char *e = exponent.buf;
        const mp_size_t width = 2 * L;
        if (scratch == NULL) {
            Py_CLEAR(result);
            PyErr_NoMemory();
            goto done;
        }
        mp_limb_t *p = scratch + SCRATCH_LIMBS(L); /* 2L: prod y0_i / R^(k-1) mod N */
        mp_limb_t *sum = p + 2 * L;                /* L+1: m + sum d_i (< 2^21 n) */
        mp_limb_t *t = sum + L + 1;                /* 2L */
        mp_limb_t *q = t + 2 * L;                  /* L+2 */
        mp_limb_t *N = q + L + 2;                  /* 2L: n^2 */
        mp_limb_t *one = N + 2 * L;                /* L: 1 */
        Py_BEGIN_ALLOW_THREADS
        const mp_limb_t *entry = NULL;
        Py_ssize_t i = 0;
        mpn_sqr(N, nl, L);
        const mp_limb_t ninv = neg_inverse(N[0]);
        memset(p, 0, 2 * L * sizeof(mp_limb_t));
        memset(sum, 0, (L + 1) * sizeof(mp_limb_t));
        memset(one, 0, L * sizeof(mp_limb_t));
        one[0] = 1;
        if (shift.buf != NULL)
            memcpy(sum, shift.buf, L * sizeof(mp_limb_t));
        for (; i < rows; i++) { /* the first nonzero digit's y0 starts the product */
            unsigned d = exponent_digit(e, exponent.len, i, window);
            if (d) {
                entry = tl + (((mp_size_t)i << window) + d) * width;
                memcpy(p, entry, L * sizeof(mp_limb_t));
                mpn_add(sum, sum, L + 1, entry + L, L);
                break;
            }
        }
        /* Each product runs while the next nonzero window's entry is fetched from memory. */
        const mp_limb_t *pending = NULL;
        for (i++; i < rows; i++) {
            unsigned d = exponent_digit(e, exponent.len, i, window);
            if (!d)
                continue;
            const mp_limb_t *ahead = tl + (((mp_size_t)i << window) + d) * width;
            for (mp_size_t k = 0; k < width; k += 8)
                __builtin_prefetch(ahead + k);
            if (pending != NULL) {
                mont_low(p, pending, N, ninv, L, scratch);
                mpn_add(sum, sum, L + 1, pending + L, L);
            }
            pending = ahead;
        }
        if (pending != NULL) {
            mont_low(p, pending, N, ninv, L, scratch);
            mpn_add(sum, sum, L + 1, pending + L, L);
        }
        if (entry != NULL)
            mont_low(p, one, N, ninv, L, scratch); /* the last R^-1: p = prod x_i / (1 + sum d_i n) */
        else
            p[0] = 1; /* exponent 0 */
        /* result = p * (1 + (sum mod n)*n) = p0 + ((p1 + p0*(sum mod n)) mod n)*n */
        mpn_tdiv_qr(q, t, 0, sum, L + 1, nl, L);
        memcpy(sum, t, L * sizeof(mp_limb_t));
        mpn_tdiv_qr(q, t, 0, p, 2 * L, nl, L); /* p = q*n + t, q < n */
        memcpy(p, t, L * sizeof(mp_limb_t));
        memcpy(p + L, q, L * sizeof(mp_limb_t));
        mpn_mul_n(t, p, sum, L);
        mpn_add(t, t, 2 * L, p + L, L);
        mpn_tdiv_qr(q, p + L, 0, t, 2 * L, nl, L);
        mpn_mul_n(out, p + L, nl, L);
        mpn_add(out, out, 2 * L, p, L);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(scratch);
    }
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&n);
    PyBuffer_Release(&exponent);
    if (shift.buf != NULL)
        PyBuffer_Release(&shift);
    return result;
}

static PyMethodDef methods[] = {
    {"build", djn_build, METH_VARARGS,
     "build(n, base, rows, window) -> bytearray: a fixed-base table in base-n digits."},
    {"power", djn_power, METH_VARARGS,
     "power(table, n, rows, window, exponent[, shift]) -> bytes: "
     "base^exponent * (1 + n)^shift mod n^2."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_djn_native",
    "Native fixed-base products modulo n^2 (see datafed.hazmat._djn).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__djn_native(void)
{
    return PyModule_Create(&module);
}
