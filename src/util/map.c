#include "util/map.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

static char tomb;
#define TOMB (&tomb)

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int map_live(const map *m, size_t i) { return m->slots[i].key && m->slots[i].key != TOMB; }

static map_slot *find(const map *m, const char *key, unsigned h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

void *map_get(const map *m, const char *key)
{
    map_slot *s = find(m, key, hash_str(key));
    return s ? s->val : NULL;
}

static void grow(map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->len * 2 < m->cap)
        ncap = m->cap; /* only tombstones: rehash in place size */
    map_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xcalloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    m->tombs = 0;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].key || old[i].key == TOMB)
            continue;
        size_t j = old[i].hash & (ncap - 1);
        while (m->slots[j].key)
            j = (j + 1) & (ncap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

void map_put(map *m, const char *key, void *val)
{
    unsigned h = hash_str(key);
    map_slot *s = find(m, key, h);
    if (s) {
        s->val = val;
        return;
    }
    if ((m->len + m->tombs + 1) * 4 >= m->cap * 3)
        grow(m);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && m->slots[i].key != TOMB)
        i = (i + 1) & mask;
    if (m->slots[i].key == TOMB)
        m->tombs--;
    m->slots[i].key = xstrdup(key);
    m->slots[i].val = val;
    m->slots[i].hash = h;
    m->len++;
}

void *map_del(map *m, const char *key)
{
    map_slot *s = find(m, key, hash_str(key));
    if (!s)
        return NULL;
    void *v = s->val;
    free(s->key);
    s->key = TOMB;
    s->val = NULL;
    m->len--;
    m->tombs++;
    return v;
}

void map_free(map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (map_live(m, i))
            free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = m->tombs = 0;
}
