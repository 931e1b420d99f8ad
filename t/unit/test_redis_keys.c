/* lib/tm_redis_keys.c: the key schema both sides use, the cluster slot of
 * a key, and the MOVED/ASK redirects both sides follow. */
#include "tap.h"
#include "tm_redis_keys.h"

static void redirect(const char *s, int want, int ask, unsigned slot, const char *host, int port)
{
    tm_redis_redirect r;
    int got = tm_redis_redirect_parse(s, strlen(s), &r);
    is_int(got, want, "\"%s\" -> %d", s, want);
    if (want == 1 && got == 1) {
        is_int(r.ask, ask, "  ask");
        is_int(r.slot, slot, "  slot");
        is_str(r.host, host, "  host");
        is_int(r.port, port, "  port");
    }
}

int main(void)
{
    /* standalone: the names old edges and existing data use, unchanged */
    is_str(tm_redis_key_name(TM_RKEY_VERSION, 0), "tm:version", "standalone version");
    is_str(tm_redis_key_name(TM_RKEY_FLAGS, 0), "tm:flags", "standalone flags");
    is_str(tm_redis_key_name(TM_RKEY_KEYS_V2, 0), "tm:keys:v2", "standalone keys v2");
    is_str(tm_redis_key_name(TM_RKEY_READY, 0), "tm:ready", "standalone ready");
    is_str(tm_redis_key_name(TM_RKEY_FLAGS_AT, 0), "tm:flags@", "standalone env prefix");
    is_str(tm_redis_key_name(TM_RKEY_FLAGS, 1), "{tm}:flags", "cluster flags");
    ok(tm_redis_key_name(TM_RKEY_COUNT, 0) == NULL, "out of range: NULL");

    /* Redis Cluster's own examples (CLUSTER KEYSLOT) */
    is_int(tm_redis_key_slot("foo", 3), 12182, "slot of foo");
    is_int(tm_redis_key_slot("bar", 3), 5061, "slot of bar");
    is_int(tm_redis_key_slot("{user1000}.following", 20), tm_redis_key_slot("user1000", 8),
           "a hash tag hashes alone");
    is_int(tm_redis_key_slot("foo{}{bar}", 10), 8363, "an empty tag: the whole key");

    /* every key of cluster mode in one slot (environments' hashes too),
     * and standalone keys spread: the reason for the mode */
    unsigned slot = tm_redis_key_slot("tm", 2);
    int same = 1, spread = 0;
    for (int k = 0; k < TM_RKEY_COUNT; k++) {
        const char *c = tm_redis_key_name((tm_redis_key) k, 1);
        const char *s = tm_redis_key_name((tm_redis_key) k, 0);
        char env[64];
        snprintf(env, sizeof env, "%sstaging", c);
        same &= tm_redis_key_slot(c, strlen(c)) == slot
                && tm_redis_key_slot(env, strlen(env)) == slot;
        spread |= tm_redis_key_slot(s, strlen(s)) != tm_redis_key_slot("tm:version", 10);
    }
    ok(same, "every cluster key is in the slot of {tm} (%u)", slot);
    ok(spread, "standalone keys are in several slots");

    redirect("MOVED 3999 127.0.0.1:6381", 1, 0, 3999, "127.0.0.1", 6381);
    redirect("ASK 16383 10.0.0.7:7000", 1, 1, 16383, "10.0.0.7", 7000);
    redirect("MOVED 0 [::1]:7001", 1, 0, 0, "::1", 7001);
    redirect("MOVED 0 ::1:7001", 1, 0, 0, "::1", 7001);
    redirect("MOVED 12 :7002", 1, 0, 12, "", 7002);
    redirect("MOVED 12 cache-0001.example.com:6379", 1, 0, 12, "cache-0001.example.com", 6379);
    redirect("ERR unknown command", 0, 0, 0, "", 0);
    redirect("MOVEDX 1 h:1", 0, 0, 0, "", 0);
    redirect("CROSSSLOT Keys in request don't hash to the same slot", 0, 0, 0, "", 0);
    redirect("MOVED 16384 h:1", -1, 0, 0, "", 0);
    redirect("MOVED x h:1", -1, 0, 0, "", 0);
    redirect("MOVED 1 h", -1, 0, 0, "", 0);
    redirect("MOVED 1 h:0", -1, 0, 0, "", 0);
    redirect("MOVED 1 h:65536", -1, 0, 0, "", 0);
    redirect("MOVED 1 h:6379 extra", -1, 0, 0, "", 0);
    redirect("MOVED 1 ?:6379", -1, 0, 0, "", 0);
    redirect("MOVED 1 a b:6379", -1, 0, 0, "", 0);
    redirect("ASK", 0, 0, 0, "", 0);
    redirect("MOVED ", -1, 0, 0, "", 0);
    char longhost[400];
    memset(longhost, 'a', sizeof longhost);
    memcpy(longhost, "MOVED 1 ", 8);
    memcpy(longhost + sizeof longhost - 6, ":6379", 6);
    redirect(longhost, -1, 0, 0, "", 0);
    return tap_done();
}
