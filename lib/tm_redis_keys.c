#include "tm_redis_keys.h"

#include <string.h>

/* Indexed by tm_redis_key; the cluster names are the standalone ones with
 * "tm" in braces (the hash tag). */
static const char *const names[2][TM_RKEY_COUNT] = {
    { "tm:version", "tm:flags", "tm:rules", "tm:keys", "tm:segments", "tm:envs",
      "tm:keys:v2", "tm:keys:used", "tm:ready", "tm:flags@", "tm:rules@" },
    { "{tm}:version", "{tm}:flags", "{tm}:rules", "{tm}:keys", "{tm}:segments",
      "{tm}:envs", "{tm}:keys:v2", "{tm}:keys:used", "{tm}:ready", "{tm}:flags@",
      "{tm}:rules@" },
};

const char *tm_redis_key_name(tm_redis_key key, int cluster)
{
    if ((unsigned) key >= TM_RKEY_COUNT) {
        return NULL;
    }
    return names[cluster ? 1 : 0][key];
}

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster
 * hashes keys. Bit by bit: a key is a few bytes, hashed rarely. */
static unsigned crc16(const unsigned char *p, size_t n)
{
    unsigned crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned) p[i] << 8;
        for (int b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
        }
        crc &= 0xffff;
    }
    return crc;
}

unsigned tm_redis_key_slot(const char *key, size_t len)
{
    /* the first '{' and the first '}' after it, if something lies between */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t) (open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t) (close - open - 1);
        }
    }
    return crc16((const unsigned char *) key, len) & 16383;
}

/* digits only, in [0, max] */
static int number(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 5) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

int tm_redis_redirect_parse(const char *err, size_t len, tm_redis_redirect *out)
{
    memset(out, 0, sizeof *out);
    size_t skip;
    if (len >= 6 && memcmp(err, "MOVED ", 6) == 0) {
        skip = 6;
    } else if (len >= 4 && memcmp(err, "ASK ", 4) == 0) {
        out->ask = 1;
        skip = 4;
    } else {
        return 0;
    }
    const char *p = err + skip, *end = err + len;
    const char *sp = memchr(p, ' ', (size_t) (end - p));
    long slot, port;
    if (sp == NULL || number(p, (size_t) (sp - p), 16383, &slot) != 0) {
        return -1;
    }
    /* host:port, the port after the last ':' (an IPv6 host holds some) */
    const char *h = sp + 1, *colon = NULL;
    for (const char *q = h; q < end; q++) {
        if (*q == ':') {
            colon = q;
        }
    }
    if (colon == NULL || number(colon + 1, (size_t) (end - colon - 1), 65535, &port) != 0
        || port == 0) {
        return -1;
    }
    size_t hlen = (size_t) (colon - h);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof out->host || (hlen == 1 && h[0] == '?')) {
        return -1;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char) h[i];
        if (c <= 0x20 || c == 0x7f || c == '[' || c == ']' || c == '/' || c == '@') {
            return -1;
        }
    }
    memcpy(out->host, h, hlen);
    out->host[hlen] = '\0';
    out->slot = (unsigned) slot;
    out->port = (int) port;
    return 1;
}
