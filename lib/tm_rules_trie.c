/* The STR_ operators' matcher: the needles of one constraint in a trie,
 * built once at compile time, so that a match reads the context value once
 * whatever the number of needles (the contract is in tm_rules_int.h).
 *
 * Nodes are numbered breadth-first and a node's edges are contiguous and
 * sorted by byte, so a step is a binary search over at most 256 edges (the
 * root has a full table). STR_CONTAINS adds Aho-Corasick failure links: on
 * a byte with no edge the walk falls back to the longest proper suffix that
 * is in the trie. Falling back shortens the current depth and each byte
 * deepens it by at most one, so a value of n bytes costs at most 2n steps. */
#include "tm_rules_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned char byte;
    uint32_t to;
} tm_trie_edge;

typedef struct {
    uint32_t first;     /* its edges: edges[first .. first + nedges) */
    uint32_t nedges;
    uint32_t fail;      /* Aho-Corasick failure link (contains only) */
    unsigned char out;  /* a needle ends here (or, contains: at a suffix) */
} tm_trie_node;

struct tm_trie {
    tm_trie_node *nodes;
    tm_trie_edge *edges;
    uint32_t root[256]; /* the root's edges as a table; 0: none */
    int reverse;        /* needles read from their end (ENDS_WITH) */
    size_t depth;       /* the longest needle */
};

/* ---- Building: a linked trie in a scratch array, then flattened ---- */

typedef struct {
    uint32_t child, last, next;     /* first/last child, next sibling; 0: none */
    unsigned char byte, out;
} build_node;

static unsigned char needle_at(const tm_str *s, size_t i, int reverse)
{
    return (unsigned char) s->s[reverse ? s->len - 1 - i : i];
}

/* Byte order of the needles as read (reversed for ENDS_WITH), so that
 * inserting them in order only ever extends a node's last child. */
static int needle_cmp(const tm_str *x, const tm_str *y, int reverse)
{
    size_t n = x->len < y->len ? x->len : y->len;
    for (size_t i = 0; i < n; i++) {
        int d = needle_at(x, i, reverse) - needle_at(y, i, reverse);
        if (d) {
            return d;
        }
    }
    return (x->len > y->len) - (x->len < y->len);
}

static int cmp_forward(const void *a, const void *b)
{
    return needle_cmp(*(const tm_str *const *) a, *(const tm_str *const *) b, 0);
}

static int cmp_reverse(const void *a, const void *b)
{
    return needle_cmp(*(const tm_str *const *) a, *(const tm_str *const *) b, 1);
}

/* Inserts the sorted needles. */
static void insert_all(build_node *bn, const tm_str **sorted, size_t n, int reverse)
{
    uint32_t count = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t at = 0;
        for (size_t j = 0; j < sorted[i]->len; j++) {
            unsigned char b = needle_at(sorted[i], j, reverse);
            uint32_t last = bn[at].last;
            if (last && bn[last].byte == b) {
                at = last;
                continue;
            }
            uint32_t nn = count++;
            bn[nn].byte = b;
            if (last) {
                bn[last].next = nn;
            } else {
                bn[at].child = nn;
            }
            bn[at].last = nn;
            at = nn;
        }
        bn[at].out = 1;
    }
}

static uint32_t step(const tm_trie *t, uint32_t at, unsigned char b)
{
    if (at == 0) {
        return t->root[b];
    }
    const tm_trie_edge *e = t->edges + t->nodes[at].first;
    size_t lo = 0, hi = t->nodes[at].nedges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e[mid].byte == b) {
            return e[mid].to;
        }
        if (e[mid].byte < b) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

/* The failure link of node c, reached from its parent p by byte b. Every
 * node shallower than c already has its link and its edges. */
static uint32_t fail_of(const tm_trie *t, uint32_t p, unsigned char b)
{
    if (p == 0) {
        return 0;
    }
    uint32_t f = t->nodes[p].fail;
    for (;;) {
        uint32_t to = step(t, f, b);
        if (to || f == 0) {
            return to;
        }
        f = t->nodes[f].fail;
    }
}

/* Numbers the nodes breadth-first (order[] maps new -> scratch index),
 * lays out their edges, and links failures when asked. */
static void flatten(tm_trie *t, const build_node *bn, uint32_t *order,
                    uint32_t *id, int links)
{
    uint32_t head = 0, tail = 1, nedges = 0;
    order[0] = 0;
    id[0] = 0;
    while (head < tail) {
        uint32_t at = head++;
        const build_node *b = &bn[order[at]];
        t->nodes[at].out = b->out;
        t->nodes[at].first = nedges;
        for (uint32_t c = b->child; c; c = bn[c].next) {
            order[tail] = c;
            id[c] = tail;
            t->edges[nedges].byte = bn[c].byte;
            t->edges[nedges].to = tail++;
            nedges++;
        }
        t->nodes[at].nedges = nedges - t->nodes[at].first;
        if (at == 0) {
            for (uint32_t e = 0; e < t->nodes[0].nedges; e++) {
                t->root[t->edges[e].byte] = t->edges[e].to;
            }
        }
    }
    if (!links) {
        return;
    }
    /* parents come before children in this order */
    for (uint32_t at = 0; at < tail; at++) {
        for (uint32_t e = 0; e < t->nodes[at].nedges; e++) {
            const tm_trie_edge *ed = &t->edges[t->nodes[at].first + e];
            t->nodes[ed->to].fail = fail_of(t, at, ed->byte);
            t->nodes[ed->to].out |= t->nodes[t->nodes[ed->to].fail].out;
        }
    }
}

/* The non-empty needles of k, sorted as read; NULL when out of memory. */
static const tm_str **sorted_needles(const tm_constraint *k, int reverse, size_t *n,
                                     size_t *bytes, size_t *depth)
{
    const tm_str **v = malloc((k->nvalues ? k->nvalues : 1) * sizeof *v);
    if (v == NULL) {
        return NULL;
    }
    *n = 0;
    *bytes = 0;
    *depth = 0;
    for (size_t i = 0; i < k->nvalues; i++) {
        if (k->values[i].len) {     /* an empty value is no pattern */
            v[(*n)++] = &k->values[i];
            *bytes += k->values[i].len;
            *depth = k->values[i].len > *depth ? k->values[i].len : *depth;
        }
    }
    qsort(v, *n, sizeof *v, reverse ? cmp_reverse : cmp_forward);
    return v;
}

int tm_trie_compile(tm_cc *c, tm_constraint *k, int reverse, int links)
{
    size_t n, bytes, depth;
    const tm_str **v = sorted_needles(k, reverse, &n, &bytes, &depth);
    build_node *bn = v ? calloc(bytes + 1, sizeof *bn) : NULL;
    uint32_t *order = bn ? malloc((bytes + 1) * 2 * sizeof *order) : NULL;
    tm_trie *t = order ? tm_arena_alloc(c->a, sizeof *t) : NULL;
    if (t) {
        t->reverse = reverse;
        t->depth = depth;
        t->nodes = tm_arena_alloc(c->a, (bytes + 1) * sizeof *t->nodes);
        t->edges = tm_arena_alloc(c->a, (bytes + 1) * sizeof *t->edges);
    }
    if (t == NULL || t->nodes == NULL || t->edges == NULL) {
        free(order);
        free(bn);
        free(v);
        return tm_cc_oom(c);
    }
    insert_all(bn, v, n, reverse);
    flatten(t, bn, order, order + bytes + 1, links);
    free(order);
    free(bn);
    free(v);
    k->compiled = t;
    return 0;
}

static unsigned char fold(unsigned char b, int icase)
{
    return icase ? tm_ascii_lower(b) : b;
}

int tm_trie_prefix(const tm_trie *t, const char *s, size_t len, int icase)
{
    uint32_t at = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char) s[t->reverse ? len - 1 - i : i];
        if ((at = step(t, at, fold(b, icase))) == 0) {
            return 0;
        }
        if (t->nodes[at].out) {
            return 1;
        }
    }
    return 0;
}

int tm_trie_inside(const tm_trie *t, const char *s, size_t len, int icase)
{
    uint32_t at = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = fold((unsigned char) s[i], icase);
        uint32_t to;
        while ((to = step(t, at, b)) == 0 && at != 0) {
            at = t->nodes[at].fail;
        }
        at = to;
        if (t->nodes[at].out) {
            return 1;
        }
    }
    return 0;
}

size_t tm_trie_depth(const tm_trie *t)
{
    return t->depth;
}
