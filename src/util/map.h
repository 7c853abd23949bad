/* String-keyed hash map (open addressing). Keys are copied; values are borrowed. */
#ifndef CK_MAP_H
#define CK_MAP_H
#include <stddef.h>

typedef struct map_slot {
    char *key;
    void *val;
    unsigned hash;
} map_slot;

typedef struct map {
    map_slot *slots;
    size_t cap; /* power of two */
    size_t len;
    size_t tombs;
} map;

#define MAP_INIT {NULL, 0, 0, 0}

void *map_get(const map *m, const char *key);
/* Sets key to val (replacing). */
void map_put(map *m, const char *key, void *val);
/* Removes key; returns the old value or NULL. */
void *map_del(map *m, const char *key);
void map_free(map *m);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (map_live(m, i)) … */
int map_live(const map *m, size_t i);

#endif
