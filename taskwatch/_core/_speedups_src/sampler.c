/* sampler.c: the CPU sampler's thread (the `cpu_sampling` option; _watchdog/_cpu.py is the rest).
 *
 * Why C: a Python thread can look at the main thread only while it holds the GIL, and a busy event
 * loop hands the GIL over mostly inside its select() call, between steps, where no task runs. Such
 * samples credit nothing to busy tasks whose steps are short (measured: 0 s). This thread never
 * takes the GIL and touches no Python object. Every interval it reads the main thread's CPU clock;
 * when that thread ran, it asks the interpreter, with Py_AddPendingCall (public, callable without
 * the GIL), to run the callback on the main thread at its next bytecode boundary: in the middle of
 * whatever Python code is running there, like a signal handler but with no signal, so no system
 * call of the program is interrupted. The callback (Python) reads the running task and credits it
 * with the CPU time since the previous sample.
 *
 * While the main thread uses no CPU (an idle loop waiting in select()), nothing is asked, and
 * after IDLE_LOOKS such looks the thread sleeps idle_s between looks, so an idle process is not
 * woken a thousand times a second. Nor is a
 * sample asked for while the main thread sleeps in a system call (time.sleep, a blocking read):
 * the call would run when it wakes, inside whatever woke.
 *
 * Linux only (pthread_getcpuclockid); elsewhere sampler_start raises NotImplementedError.
 */
#include "speedups.h"

#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <signal.h>
#include <time.h>

static pthread_t thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static int started;        /* a thread was started and not joined (GIL held to read or write) */
static int stopping;       /* under mu */
static int queued;         /* a pending call is queued and has not run yet (atomic) */
static clockid_t target;   /* the main thread's CPU clock */
static int stat_fd = -1;   /* its /proc/self/task/TID/stat, to ask whether it is on a CPU now */
static dev_t stat_dev;     /* ... and the file it was opened on: a program that closes fds it did */
static ino_t stat_ino;     /* not open (closerange) may reuse the number for a file of its own */
static long long asked_at, asked_cpu; /* when the queued call was asked for (monotonic ns), and
                                       * the main thread's CPU time then (written before queuing) */
static long long interval_ns, idle_ns;
static unsigned long long requests, refused, wakeups, asleep, failures; /* atomic */

/* Looks in a row that found the main thread idle before the sampler looks only every idle_s: a
 * loop that sleeps between short bursts (a timer every few ms) keeps being sampled at the
 * interval; one idle for that long is woken 1/idle_s times a second. */
#define IDLE_LOOKS 32


/* What a sample reads, set by sampler_start (GIL held to read or write). All are C functions or
 * plain containers: a sample runs no bytecode, so no signal handler, tracer or profiler of the
 * program's can run inside it, and nothing it does can raise into the program. */
static PyObject *get_loop;    /* asyncio.events._get_running_loop (C) */
static PyObject *current_fn;  /* asyncio.current_task (C) */
static PyObject *py_current;  /* 3.14+: asyncio.tasks._current_tasks (pure-Python tasks), or NULL */
static PyObject *sites;       /* (id(coro), id(site code), offset) -> [seconds, coro, code, offset] */
static long long stale_ns, last_cpu;
/* the totals, ns (GIL): sampled, then split by where the main thread was */
static long long t_total, t_tasks, t_loop, t_outside, t_unwatched, t_unattributed, t_other_sites;
static long long n_samples;
static const char *first_failure; /* the type name of the first failure, a static C string */
#define MAX_SITES 10000

/* Drop what a sample reads: a call still queued then does nothing. */
static void
forget(void)
{
    Py_CLEAR(sites);
    Py_CLEAR(get_loop);
    Py_CLEAR(current_fn);
    Py_CLEAR(py_current);
}

/* The sample's failure: counted (the Python side reports it), never raised. */
static void
failed(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (first_failure == NULL) {
        /* tp_name of a static type or a heap type's name kept alive below: copied */
        static char name[128];
        snprintf(name, sizeof(name), "%s",
                 type != NULL && PyType_Check(type) ? ((PyTypeObject *)type)->tp_name : "?");
        first_failure = name;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
}

/* The record of a task, read without running code of the program's: only from task types whose
 * attribute lookup is the generic one (taskwatch's Task classes are). New reference or NULL. */
static PyObject *
record_of(PyObject *task)
{
    if (Py_TYPE(task)->tp_getattro != PyObject_GenericGetAttr) {
        return NULL;
    }
    PyObject *rec;
    if (tw_optional_attr(task, s_tw_rec, &rec) <= 0) {
        PyErr_Clear(); /* no record: a task taskwatch did not make */
        return NULL;
    }
    if (!IS_RECORD(rec)) {
        Py_CLEAR(rec);
    }
    return rec;
}

/* Add ns to the record's creation site: (coroutine code, first frame of its creation stack). */
static int
credit_site(RecordObject *rec, long long ns)
{
    PyObject *code = NULL;
    long lasti = 0;
    if (Py_SIZE(rec) > 0) {
        code = rec->items[0].code;
        lasti = rec->items[0].lasti;
    }
    else if (rec->stack != NULL && PyTuple_Check(rec->stack) && PyTuple_GET_SIZE(rec->stack) >= 2) {
        code = PyTuple_GET_ITEM(rec->stack, 0);
        lasti = PyLong_AsLong(PyTuple_GET_ITEM(rec->stack, 1));
        if (lasti == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    PyObject *coro = rec->coro != NULL ? rec->coro : Py_None;
    PyObject *key = Py_BuildValue("(nnl)", (Py_ssize_t)(uintptr_t)coro,
                                  (Py_ssize_t)(uintptr_t)code, lasti);
    if (key == NULL) {
        return -1;
    }
    PyObject *entry = PyDict_GetItemWithError(sites, key); /* borrowed */
    int rc = 0;
    if (entry != NULL) {
        PyObject *seconds = PyFloat_FromDouble(PyFloat_AsDouble(PyList_GET_ITEM(entry, 0)) + ns / 1e9);
        rc = seconds != NULL ? PyList_SetItem(entry, 0, seconds) : -1;
    }
    else if (PyErr_Occurred()) {
        rc = -1;
    }
    else if (PyDict_GET_SIZE(sites) >= MAX_SITES) {
        t_other_sites += ns;
    }
    else {
        /* the entry holds both code objects: their ids are not reused while the key exists */
        entry = Py_BuildValue("[dOOl]", ns / 1e9, coro, code != NULL ? code : Py_None, lasti);
        rc = entry != NULL ? PyDict_SetItem(sites, key, entry) : -1;
        Py_XDECREF(entry);
    }
    Py_DECREF(key);
    return rc;
}

/* Runs on the main thread (the interpreter runs pending calls there only), GIL held, between two
 * bytecodes of whatever runs. It runs no bytecode itself, leaves no error behind, never fails. */
static int
sample_now(void *unused)
{
    long long at = __atomic_load_n(&asked_at, __ATOMIC_ACQUIRE);
    long long cpu_then = __atomic_load_n(&asked_cpu, __ATOMIC_ACQUIRE);
    __atomic_store_n(&queued, 0, __ATOMIC_RELEASE); /* after reading the pair it goes with */
    if (sites == NULL) {
        return 0; /* stopped since it was queued (or the interpreter is finishing) */
    }
    long long now = tw_clock_ns(CLOCK_THREAD_CPUTIME_ID), wall = tw_clock_ns(CLOCK_MONOTONIC);
    long long ns = now - last_cpu;
    last_cpu = now;
    if (now < 0 || ns <= 0) {
        return 0;
    }
    PyObject *s_type, *s_value, *s_tb;
    PyErr_Fetch(&s_type, &s_value, &s_tb);
    t_total += ns;
    n_samples++;
    if ((wall - at) - (now - cpu_then) > stale_ns) {
        t_unattributed += ns; /* it slept between the ask and now: this is after, in what woke */
        goto done;
    }
    PyObject *loop = PyObject_CallNoArgs(get_loop);
    if (loop == NULL) {
        failed();
        goto done;
    }
    if (loop == Py_None) {
        t_outside += ns;
        Py_DECREF(loop);
        goto done;
    }
    PyObject *task = PyObject_CallOneArg(current_fn, loop);
    if (task == Py_None && py_current != NULL) {
        Py_DECREF(task);
        task = PyDict_GetItemWithError(py_current, loop);
        Py_XINCREF(task);
        if (task == NULL && !PyErr_Occurred()) {
            task = Py_NewRef(Py_None);
        }
    }
    Py_DECREF(loop);
    if (task == NULL) {
        failed();
        goto done;
    }
    if (task == Py_None) {
        t_loop += ns;
    }
    else {
        PyObject *rec = record_of(task);
        if (rec == NULL) {
            t_unwatched += ns;
        }
        else {
            ((RecordObject *)rec)->busy += ns / 1e9;
            t_tasks += ns;
            if (credit_site((RecordObject *)rec, ns) < 0) {
                failed();
            }
            Py_DECREF(rec);
        }
    }
    Py_DECREF(task);
done:
    PyErr_Restore(s_type, s_value, s_tb);
    return 0;
}

/* Whether fd is still the file sampler_start opened. */
static int
still_ours(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == stat_dev && st.st_ino == stat_ino;
}

static void
close_stat(void)
{
    if (stat_fd >= 0 && still_ours(stat_fd)) {
        close(stat_fd);
    }
    stat_fd = -1;
}

/* Whether the main thread is on a CPU or waiting for one (state R) rather than asleep in a
 * system call: a call asked for while it sleeps would run when it wakes, in whatever wakes, and
 * credit that with CPU time others used. -1: cannot tell (no /proc). */
static int
running_now(void)
{
    if (stat_fd < 0) {
        return -1;
    }
    if (!still_ours(stat_fd)) {
        stat_fd = -1; /* the program's now: never read or closed by taskwatch again */
        return -1;
    }
    char buf[512];
    ssize_t n = pread(stat_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) {
        return -1;
    }
    buf[n] = 0;
    char *close = strrchr(buf, ')'); /* the name in parentheses may hold anything */
    if (close == NULL || close[1] != ' ') {
        return -1;
    }
    return close[2] == 'R';
}

static void *
run(void *unused)
{
    pthread_setname_np(pthread_self(), "taskwatch-cpu"); /* as top -H and /proc show it */
    long long sleep_ns = interval_ns;
    long long seen_cpu = tw_clock_ns(target), seen_at = tw_clock_ns(CLOCK_MONOTONIC); /* the previous look */
    int idle_looks = 0;
    pthread_mutex_lock(&mu);
    while (!stopping && seen_cpu >= 0) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        long long ns = deadline.tv_nsec + sleep_ns;
        deadline.tv_sec += ns / 1000000000LL;
        deadline.tv_nsec = ns % 1000000000LL;
        int rc = 0;
        while (!stopping && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&cv, &mu, &deadline);
        }
        if (stopping) {
            break;
        }
        __atomic_add_fetch(&wakeups, 1, __ATOMIC_RELAXED);
        long long now = tw_clock_ns(target), at = tw_clock_ns(CLOCK_MONOTONIC);
        if (now < 0) {
            break; /* the main thread is gone */
        }
        long long ran = now - seen_cpu, elapsed = at - seen_at;
        seen_cpu = now;
        seen_at = at;
        if (ran * 10 < elapsed) {
            /* on a CPU less than a tenth of the time since the previous look: idle */
            if (++idle_looks >= IDLE_LOOKS) {
                sleep_ns = idle_ns; /* idle for a while: look less often */
            }
            continue;
        }
        idle_looks = 0;
        sleep_ns = interval_ns;
        /* on a CPU nearly all the time since the previous look: surely on one now */
        if (ran * 10 < elapsed * 9 && running_now() == 0) {
            __atomic_add_fetch(&asleep, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (__atomic_exchange_n(&queued, 1, __ATOMIC_ACQ_REL)) {
            continue; /* the last one has not run: the main thread is inside one long C call */
        }
        __atomic_store_n(&asked_at, at, __ATOMIC_RELEASE);
        __atomic_store_n(&asked_cpu, now, __ATOMIC_RELEASE);
        if (Py_AddPendingCall(sample_now, NULL) != 0) {
            __atomic_store_n(&queued, 0, __ATOMIC_RELEASE);
            __atomic_add_fetch(&refused, 1, __ATOMIC_RELAXED); /* the queue was full */
        }
        else {
            __atomic_add_fetch(&requests, 1, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

PyObject *
tw_sampler_start(PyObject *module, PyObject *args)
{
    double interval, idle;
    unsigned long ident;
    long native_id;
    PyObject *loop_fn, *task_fn, *py_tasks, *site_dict;
    if (!PyArg_ParseTuple(args, "ddklOOOO!:sampler_start", &interval, &idle, &ident, &native_id,
                          &loop_fn, &task_fn, &py_tasks, &PyDict_Type, &site_dict)) {
        return NULL;
    }
    if (started) {
        PyErr_SetString(PyExc_RuntimeError, "the sampler is already running");
        return NULL;
    }
    if (!(interval >= 1e-5 && interval <= 10.0 && idle >= interval && idle <= 10.0)) {
        PyErr_SetString(PyExc_ValueError, "sampler intervals out of range");
        return NULL;
    }
    /* threading's ident is the thread's pthread_t on Linux (PyThread_get_thread_ident) */
    int err = pthread_getcpuclockid((pthread_t)ident, &target);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    long long first = tw_clock_ns(target);
    if (first < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", native_id);
    close_stat();
    stat_fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (stat_fd >= 0 && fstat(stat_fd, &st) == 0) {
        stat_dev = st.st_dev;
        stat_ino = st.st_ino;
    }
    else if (stat_fd >= 0) {
        close(stat_fd);
        stat_fd = -1;
    }
    /* Made anew each start: a fork from another thread while an earlier stop waited may have
     * left them locked in this process. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    mu = fresh;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &attr);
    pthread_condattr_destroy(&attr);
    interval_ns = (long long)(interval * 1e9);
    idle_ns = (long long)(idle * 1e9);
    stale_ns = interval_ns / 2 > 100000 ? interval_ns / 2 : 100000;
    stopping = 0;
    __atomic_store_n(&queued, 0, __ATOMIC_RELEASE);
    last_cpu = first;
    t_total = t_tasks = t_loop = t_outside = t_unwatched = t_unattributed = t_other_sites = 0;
    n_samples = 0;
    Py_INCREF(loop_fn);
    Py_XSETREF(get_loop, loop_fn);
    Py_INCREF(task_fn);
    Py_XSETREF(current_fn, task_fn);
    Py_XSETREF(py_current, PyDict_Check(py_tasks) ? Py_NewRef(py_tasks) : NULL);
    Py_INCREF(site_dict);
    Py_XSETREF(sites, site_dict);
    /* the thread is made with every signal blocked, so the program's signals never land on it */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&thread, NULL, run, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        forget();
        close_stat();
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    started = 1;
    Py_RETURN_NONE;
}

PyObject *
tw_sampler_stop(PyObject *module, PyObject *unused)
{
    forget(); /* a call still queued finds nothing to credit and does nothing */
    if (!started) {
        Py_RETURN_NONE;
    }
    started = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&mu);
    stopping = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
    pthread_cond_destroy(&cv);
    close_stat();
    Py_RETURN_NONE;
}

PyObject *
tw_sampler_after_fork(PyObject *module, PyObject *unused)
{
    /* The child has no sampler thread (fork copies only the forking thread), and the mutex may
     * have been held by it: start from nothing. */
    forget();
    started = 0;
    stopping = 0;
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    mu = fresh;
    close_stat(); /* the parent's main thread's file */
    __atomic_store_n(&queued, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

PyObject *
tw_sampler_stats(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(KKKKKs)", __atomic_load_n(&requests, __ATOMIC_RELAXED),
                         __atomic_load_n(&refused, __ATOMIC_RELAXED),
                         __atomic_load_n(&wakeups, __ATOMIC_RELAXED),
                         __atomic_load_n(&asleep, __ATOMIC_RELAXED),
                         __atomic_load_n(&failures, __ATOMIC_RELAXED), first_failure);
}

PyObject *
tw_sampler_totals(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:L}", "total", t_total / 1e9,
                         "tasks", t_tasks / 1e9, "loop", t_loop / 1e9, "outside", t_outside / 1e9,
                         "unwatched", t_unwatched / 1e9, "unattributed", t_unattributed / 1e9,
                         "other_sites", t_other_sites / 1e9, "samples", n_samples);
}

#else /* not Linux */

PyObject *
tw_sampler_start(PyObject *module, PyObject *args)
{
    PyErr_SetString(PyExc_NotImplementedError, "the CPU sampler needs Linux");
    return NULL;
}

PyObject *
tw_sampler_stop(PyObject *module, PyObject *unused)
{
    Py_RETURN_NONE;
}

PyObject *
tw_sampler_after_fork(PyObject *module, PyObject *unused)
{
    Py_RETURN_NONE;
}

PyObject *
tw_sampler_stats(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(iiiiiz)", 0, 0, 0, 0, 0, NULL);
}

PyObject *
tw_sampler_totals(PyObject *module, PyObject *unused)
{
    return PyDict_New();
}

#endif
