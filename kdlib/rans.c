/* Bounds-checked decoding of CompressAI's rANS streams (kdlib.rans loads this through ctypes).
 *
 * The arithmetic is CompressAI's (compressai/cpp_exts/rans: Rans64 with 16-bit precision, 4-bit
 * bypass coding of escapes), so every stream CompressAI's encoder writes decodes to the same
 * symbols. What differs: every read of the stream is checked against its real end, and the
 * decoder refuses what no encoder writes (a state outside [2^31, 2^63), an escape of more than 8
 * groups, words left over, a final state other than the encoder's initial one). It never reads
 * outside the bytes it is given, whatever they hold. ctypes releases the GIL around the call.
 */
#include <stdint.h>
#include <string.h>

#define RANS_L (1ull << 31)
#define PRECISION 16
#define BYPASS 4
#define BYPASS_MAX 15

enum { OK = 0, SHORT = -1, STATE = -2, OVERRUN = -3, INDEX = -4, ESCAPE = -5, LEFTOVER = -6 };

typedef struct {
    const uint8_t *ptr, *end;
    uint64_t x;
} stream_t;

static inline int read_word(stream_t *s, uint32_t *word) {
    if (s->end - s->ptr < 4) return OVERRUN;
    memcpy(word, s->ptr, 4); /* little-endian words, as the encoder writes them on x86 and ARM */
    s->ptr += 4;
    return OK;
}

static inline int renorm(stream_t *s) {
    if (s->x < RANS_L) {
        uint32_t word;
        if (read_word(s, &word)) return OVERRUN;
        s->x = (s->x << 32) | word;
    }
    return OK;
}

static inline int get_bits(stream_t *s, uint32_t *val) {
    *val = (uint32_t)(s->x & ((1u << BYPASS) - 1));
    s->x >>= BYPASS;
    return renorm(s);
}

/* Decode n symbols; out[i] is the CDF position of symbol i (CompressAI's value before its offset).
 * cdfs: ntables rows of width int32, row t valid up to lengths[t]; the caller checks the tables
 * (start at 0, strictly increasing, end at 2^16). Returns 0 or a negative code above. */
int64_t kdl_rans_decode(const uint8_t *data, int64_t size, const int32_t *indexes, int64_t n,
                        const int32_t *cdfs, const int32_t *lengths, int32_t width, int32_t ntables,
                        int32_t *out) {
    stream_t s = {data, data + size, 0};
    uint32_t lo, hi;
    if (size < 8 || size % 4) return SHORT;
    read_word(&s, &lo);
    read_word(&s, &hi);
    s.x = ((uint64_t)hi << 32) | lo;
    if (s.x < RANS_L || s.x >> 63) return STATE;
    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = indexes[i];
        if (t < 0 || t >= ntables) return INDEX;
        const int32_t *cdf = cdfs + (int64_t)t * width;
        const int32_t max_value = lengths[t] - 2;
        const uint32_t cum = (uint32_t)(s.x & ((1u << PRECISION) - 1));
        int32_t k = 0; /* the last position whose CDF is <= cum: CompressAI's linear search */
        while (k + 1 < lengths[t] - 1 && (uint32_t)cdf[k + 1] <= cum) ++k;
        const uint64_t start = (uint32_t)cdf[k], freq = (uint32_t)(cdf[k + 1] - cdf[k]);
        s.x = freq * (s.x >> PRECISION) + (s.x & ((1u << PRECISION) - 1)) - start;
        if (renorm(&s)) return OVERRUN;
        int32_t value = k;
        if (value == max_value) { /* escape: the value follows in 4-bit groups */
            uint32_t val, groups;
            if (get_bits(&s, &val)) return OVERRUN;
            groups = val;
            while (val == BYPASS_MAX) {
                if (get_bits(&s, &val)) return OVERRUN;
                groups += val;
                if (groups > 8) return ESCAPE; /* an int32 needs at most 8 */
            }
            if (groups > 8) return ESCAPE;
            uint32_t raw = 0;
            for (uint32_t j = 0; j < groups; ++j) {
                if (get_bits(&s, &val)) return OVERRUN;
                raw |= val << (j * BYPASS);
            }
            value = (int32_t)(raw >> 1);
            value = (raw & 1) ? -value - 1 : value + max_value;
        }
        out[i] = value;
    }
    if (s.ptr != s.end) return LEFTOVER;
    if (s.x != RANS_L) return STATE;
    return OK;
}

/* Encoding, byte for byte CompressAI's BufferedRansEncoder (encode_with_indexes, then flush): each
 * symbol as its CDF position, an escape (a value outside the table) as the last position followed by
 * its 4-bit groups, all coded in reverse order into Rans64. Written here so that the encoder, like the
 * decoder, runs without the GIL (CompressAI's holds it: two threads encode no faster than one). */
enum { FULL = -7 };

static inline int put(uint64_t *x, uint32_t **ptr, uint32_t *first, uint32_t start, uint32_t freq) {
    const uint64_t x_max = ((RANS_L >> PRECISION) << 32) * freq;
    if (*x >= x_max) {
        if (*ptr == first) return FULL;
        *--*ptr = (uint32_t)*x;
        *x >>= 32;
    }
    *x = ((*x / freq) << PRECISION) + (*x % freq) + start;
    return OK;
}

static inline int put_bits(uint64_t *x, uint32_t **ptr, uint32_t *first, uint32_t val) {
    const uint64_t x_max = ((RANS_L >> PRECISION) << 32) * (1u << (PRECISION - BYPASS));
    if (*x >= x_max) {
        if (*ptr == first) return FULL;
        *--*ptr = (uint32_t)*x;
        *x >>= 32;
    }
    *x = (*x << BYPASS) | val;
    return OK;
}

/* Encode n symbols (values before their table's offset, as CompressAI takes them) with tables
 * indexes[i] into out[0:capacity] (32-bit words, filled from the end). Returns the number of words
 * written, which end at out + capacity, or INDEX / FULL. */
int64_t kdl_rans_encode(const int32_t *symbols, const int32_t *indexes, int64_t n, const int32_t *cdfs,
                        const int32_t *lengths, const int32_t *offsets, int32_t width, int32_t ntables,
                        uint32_t *out, int64_t capacity) {
    uint64_t x = RANS_L;
    uint32_t *ptr = out + capacity;
    for (int64_t i = n - 1; i >= 0; --i) {
        const int32_t t = indexes[i];
        if (t < 0 || t >= ntables) return INDEX;
        const int32_t *cdf = cdfs + (int64_t)t * width;
        const int32_t max_value = lengths[t] - 2;
        int64_t value = (int64_t)symbols[i] - offsets[t];
        uint32_t raw = 0;
        if (value < 0) {
            raw = (uint32_t)(-2 * value - 1);
            value = max_value;
        } else if (value >= max_value) {
            raw = (uint32_t)(2 * (value - max_value));
            value = max_value;
        }
        if (value == max_value) { /* pushed after the symbol, so coded before it */
            int32_t groups = 0;
            while (groups < 8 && (raw >> (groups * BYPASS)) != 0) ++groups;
            for (int32_t j = groups - 1; j >= 0; --j)
                if (put_bits(&x, &ptr, out, (raw >> (j * BYPASS)) & BYPASS_MAX)) return FULL;
            if (put_bits(&x, &ptr, out, (uint32_t)(groups % BYPASS_MAX))) return FULL;
            for (int32_t k = 0; k < groups / BYPASS_MAX; ++k)
                if (put_bits(&x, &ptr, out, BYPASS_MAX)) return FULL;
        }
        if (put(&x, &ptr, out, (uint32_t)cdf[value], (uint32_t)(cdf[value + 1] - cdf[value]))) return FULL;
    }
    if (ptr - out < 2) return FULL;
    ptr -= 2;
    ptr[0] = (uint32_t)x;
    ptr[1] = (uint32_t)(x >> 32);
    return (out + capacity) - ptr;
}
