/* codes.c: the code classification cache: code pointer -> internal/boundary flags, with the code
 * kept alive so a pointer is never confused with a reused one. Misses ask _sites.is_internal and
 * the boundary set; _sites calls invalidate() whenever either changes. The creation-stack walk
 * (recorder.c) asks it about every frame it meets.
 */
#include "speedups.h"

typedef struct {
    PyObject *code;
    int flags;
} CodeEntry;

#define CACHE_SIZE (1 << 15)
#define CACHE_LIMIT (CACHE_SIZE / 2)
static CodeEntry code_cache[CACHE_SIZE];
static Py_ssize_t code_cache_count;
PyObject *classify_fn; /* _sites.is_internal */
PyObject *boundary_set; /* _sites._boundary (ids) */
PyObject *made_by_library_fn; /* _sites.made_by_library */

void
tw_code_cache_clear(void)
{
    for (Py_ssize_t i = 0; i < CACHE_SIZE; i++) {
        Py_CLEAR(code_cache[i].code);
    }
    code_cache_count = 0;
}

int
tw_code_flags(PyObject *code)
{
    size_t h = ((size_t)(uintptr_t)code >> 4) & (CACHE_SIZE - 1);
    for (;;) {
        PyObject *c = code_cache[h].code;
        if (c == code) {
            return code_cache[h].flags;
        }
        if (c == NULL) {
            break;
        }
        h = (h + 1) & (CACHE_SIZE - 1);
    }
    if (classify_fn == NULL || boundary_set == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "taskwatch._core._speedups is not configured");
        return -1;
    }
    int internal = truth(PyObject_CallOneArg(classify_fn, code));
    if (internal < 0) {
        return -1;
    }
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        return -1;
    }
    int boundary = PySet_Contains(boundary_set, key);
    Py_DECREF(key);
    if (boundary < 0) {
        return -1;
    }
    int flags = (internal ? F_INTERNAL : 0) | (boundary ? F_BOUNDARY : 0);
    if (code_cache_count >= CACHE_LIMIT) {
        tw_code_cache_clear();
        h = ((size_t)(uintptr_t)code >> 4) & (CACHE_SIZE - 1);
    }
    while (code_cache[h].code != NULL) {
        h = (h + 1) & (CACHE_SIZE - 1);
    }
    Py_INCREF(code);
    code_cache[h].code = code;
    code_cache[h].flags = flags;
    code_cache_count++;
    return flags;
}
