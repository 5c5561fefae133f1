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
static PyObject *callback; /* called on the main thread, GIL held */
static unsigned long long requests, refused, wakeups, asleep, failures; /* atomic */

/* Looks in a row that found the main thread idle before the sampler looks only every idle_s: a
 * loop that sleeps between short bursts (a timer every few ms) keeps being sampled at the
 * interval; one idle for that long is woken 1/idle_s times a second. */
#define IDLE_LOOKS 32

static long long
read_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) {
        return -1;
    }
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Runs on the main thread (the interpreter runs pending calls there only), GIL held, between two
 * bytecodes of whatever runs: it must leave no error behind and never fail the program's code. */
static int
sample_now(void *unused)
{
    __atomic_store_n(&queued, 0, __ATOMIC_RELEASE);
    PyObject *fn = callback;
    if (fn == NULL) {
        return 0; /* stopped since it was queued (or the interpreter is finishing) */
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_INCREF(fn);
    PyObject *r = PyObject_CallFunction(fn, "LL", __atomic_load_n(&asked_at, __ATOMIC_ACQUIRE),
                                        __atomic_load_n(&asked_cpu, __ATOMIC_ACQUIRE));
    Py_DECREF(fn);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            /* KeyboardInterrupt or SystemExit from a signal handler that ran meanwhile: the
             * program's. Raised into the running code, where the handler's would have been. */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return -1;
        }
        /* Counted, not reported from here: the main thread may be inside taskwatch's own code
         * holding the lock that reporting takes. The Python side reports the count. */
        PyErr_Clear();
        __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
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

static long long
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
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
    long long last = read_ns(target), sleep_ns = interval_ns;
    long long busy = interval_ns / 10; /* ran at least this much since the last look: busy */
    long long seen_cpu = last, seen_at = mono_ns(); /* the previous look */
    int idle_looks = 0;
    pthread_mutex_lock(&mu);
    while (!stopping && last >= 0) {
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
        long long now = read_ns(target), at = mono_ns();
        if (now < 0) {
            break; /* the main thread is gone */
        }
        /* on a CPU nearly all the time since the previous look: surely on one now */
        int all_along = (now - seen_cpu) * 10 >= (at - seen_at) * 9;
        seen_cpu = now;
        seen_at = at;
        if (now - last < busy) {
            if (++idle_looks >= IDLE_LOOKS) {
                sleep_ns = idle_ns; /* idle for a while: look less often */
            }
            continue;
        }
        last = now;
        idle_looks = 0;
        sleep_ns = interval_ns;
        if (!all_along && running_now() == 0) {
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
    PyObject *fn;
    if (!PyArg_ParseTuple(args, "ddklO:sampler_start", &interval, &idle, &ident, &native_id, &fn)) {
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
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &attr);
    pthread_condattr_destroy(&attr);
    interval_ns = (long long)(interval * 1e9);
    idle_ns = (long long)(idle * 1e9);
    stopping = 0;
    __atomic_store_n(&queued, 0, __ATOMIC_RELEASE);
    Py_INCREF(fn);
    Py_XSETREF(callback, fn);
    /* the thread is made with every signal blocked, so the program's signals never land on it */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&thread, NULL, run, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        Py_CLEAR(callback);
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
    Py_CLEAR(callback); /* a call still queued finds none and does nothing */
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
    Py_CLEAR(callback);
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
    return Py_BuildValue("(KKKKK)", __atomic_load_n(&requests, __ATOMIC_RELAXED),
                         __atomic_load_n(&refused, __ATOMIC_RELAXED),
                         __atomic_load_n(&wakeups, __ATOMIC_RELAXED),
                         __atomic_load_n(&asleep, __ATOMIC_RELAXED),
                         __atomic_load_n(&failures, __ATOMIC_RELAXED));
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
    return Py_BuildValue("(iiiii)", 0, 0, 0, 0, 0);
}

#endif
