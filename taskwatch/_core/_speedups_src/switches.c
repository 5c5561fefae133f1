/* switches.c: each loop thread's longest stretch without a context switch (the watchdog's sure
 * rule against a false block; _watchdog/_watch.py is the rest).
 *
 * Why: a loop of many short steps can keep taskwatch's thread from the GIL for seconds. When the
 * thread gets it back, the loop thread's CPU time in that gap looks like one step that held the
 * GIL, and only a heuristic (_watch._gil_changed_hands) told the two apart. Every task step and
 * every callback of asyncio's and uvloop's loops runs inside a context (PyContext_Enter/Exit, or
 * Context.run), so a step that held the loop for D seconds is a stretch of D seconds without a
 * context switch on that thread, and a gap whose longest stretch is under the block threshold
 * held no block.
 *
 * How: CPython 3.14+ calls context watchers (PyContext_AddWatcher, public) at every switch, on the
 * thread that switched, with the GIL held. The watcher reads a coarse clock (vDSO, a few ns, 1-4 ms
 * resolution) for the threads the watchdog registered, and keeps the longest stretch since the
 * watchdog's last look. Earlier versions have no watcher: switches_watch returns False there.
 * Everything here runs with the GIL held (the accelerator is never loaded on a free-threaded
 * build), so the table needs no lock.
 */
#include "speedups.h"

#define MAX_THREADS 16

typedef struct {
    unsigned long ident;     /* the thread's, as threading.get_ident() */
    PyThreadState *tstate;   /* ... and its thread state, which the watcher compares (cheaper) */
    long long last;          /* ns of the thread's last switch */
    long long longest;       /* ns: the longest stretch between two switches since switches_gap */
} Stretch;

static Stretch threads[MAX_THREADS]; /* the first n_watched are in use */
static int n_watched;

#if PY_VERSION_HEX >= 0x030E0000 && defined(CLOCK_MONOTONIC)
static int watcher_id = -1;
static long long resolution_ns; /* the clock's: a stretch read may be short by up to this */

#if defined(CLOCK_MONOTONIC_COARSE)
#define TW_STRETCH_CLOCK CLOCK_MONOTONIC_COARSE
#else
#define TW_STRETCH_CLOCK CLOCK_MONOTONIC
#endif

/* The watcher: runs at every context switch of every thread; never fails. */
static int
on_switch(PyContextEvent event, PyObject *ctx)
{
    PyThreadState *me = PyThreadState_GetUnchecked();
    for (int i = 0; i < n_watched; i++) {
        Stretch *s = &threads[i];
        if (s->tstate == me) {
            long long now = tw_clock_ns(TW_STRETCH_CLOCK);
            if (now - s->last > s->longest) {
                s->longest = now - s->last;
            }
            s->last = now;
            return 0;
        }
    }
    return 0;
}
#endif

static Stretch *
find(unsigned long ident)
{
    for (int i = 0; i < n_watched; i++) {
        if (threads[i].ident == ident) {
            return &threads[i];
        }
    }
    return NULL;
}

/* A thread ident (threading.get_ident()) from Python: 0, or -1 with an exception set. */
static int
to_ident(PyObject *arg, unsigned long *ident)
{
    *ident = PyLong_AsUnsignedLong(arg);
    return *ident == (unsigned long)-1 && PyErr_Occurred() ? -1 : 0;
}

static void
forget_slot(Stretch *s)
{
    *s = threads[--n_watched]; /* the last one moves into the hole */
}

/* switches_watch(ident) -> bool: measure the calling thread's stretches from now on; ident is its
 * threading.get_ident() (False: this Python has no context watchers, 16 threads are measured
 * already, or ident is not the calling thread's). */
PyObject *
tw_switches_watch(PyObject *module, PyObject *arg)
{
#if PY_VERSION_HEX >= 0x030E0000 && defined(CLOCK_MONOTONIC)
    unsigned long ident;
    if (to_ident(arg, &ident) < 0) {
        return NULL;
    }
    if (ident == 0 || ident != PyThread_get_thread_ident()) {
        Py_RETURN_FALSE;
    }
    Stretch *s = find(ident);
    if (s == NULL) {
        if (n_watched == MAX_THREADS) {
            Py_RETURN_FALSE;
        }
        if (watcher_id < 0) {
            struct timespec res;
            resolution_ns = clock_getres(TW_STRETCH_CLOCK, &res) == 0
                ? (long long)res.tv_sec * 1000000000LL + res.tv_nsec : 10000000LL;
            watcher_id = PyContext_AddWatcher(on_switch);
            if (watcher_id < 0) {
                PyErr_Clear(); /* all watcher ids taken by others: no sure rule here */
                Py_RETURN_FALSE;
            }
        }
        s = &threads[n_watched++];
        s->ident = ident;
    }
    s->tstate = PyThreadState_Get();
    s->last = tw_clock_ns(TW_STRETCH_CLOCK);
    s->longest = 0;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* The last thread out removes the watcher: an uninstalled taskwatch leaves no hook behind. */
static void
drop_watcher_if_unused(void)
{
#if PY_VERSION_HEX >= 0x030E0000 && defined(CLOCK_MONOTONIC)
    if (n_watched == 0 && watcher_id >= 0) {
        if (PyContext_ClearWatcher(watcher_id) < 0) {
            PyErr_Clear();
        }
        watcher_id = -1;
    }
#endif
}

/* switches_unwatch(ident): stop measuring that thread. */
PyObject *
tw_switches_unwatch(PyObject *module, PyObject *arg)
{
    unsigned long ident;
    if (to_ident(arg, &ident) < 0) {
        return NULL;
    }
    Stretch *s = find(ident);
    if (s != NULL) {
        forget_slot(s);
    }
    drop_watcher_if_unused();
    Py_RETURN_NONE;
}

/* switches_stop(): measure no thread (the watchdog stopped). */
PyObject *
tw_switches_stop(PyObject *module, PyObject *unused)
{
    n_watched = 0;
    drop_watcher_if_unused();
    Py_RETURN_NONE;
}

/* switches_gap(ident) -> float | None: the longest stretch without a switch on that thread since
 * the previous call (the one still open included), in seconds, rounded up by the clock's
 * resolution (never under the true stretch); None if it is not measured. */
PyObject *
tw_switches_gap(PyObject *module, PyObject *arg)
{
#if PY_VERSION_HEX >= 0x030E0000 && defined(CLOCK_MONOTONIC)
    unsigned long ident;
    if (to_ident(arg, &ident) < 0) {
        return NULL;
    }
    Stretch *s = watcher_id >= 0 ? find(ident) : NULL;
    if (s == NULL) {
        Py_RETURN_NONE;
    }
    long long open = tw_clock_ns(TW_STRETCH_CLOCK) - s->last;
    long long longest = s->longest > open ? s->longest : open;
    s->longest = 0;
    return PyFloat_FromDouble((longest + resolution_ns) / 1e9);
#else
    Py_RETURN_NONE;
#endif
}

/* switches_after_fork(): the child's threads are not the parent's; its watchdog registers anew. */
PyObject *
tw_switches_after_fork(PyObject *module, PyObject *unused)
{
    unsigned long me = PyThread_get_thread_ident();
    for (int i = n_watched - 1; i >= 0; i--) {
        if (threads[i].ident != me) {
            forget_slot(&threads[i]);
        }
    }
    drop_watcher_if_unused();
    Py_RETURN_NONE;
}
