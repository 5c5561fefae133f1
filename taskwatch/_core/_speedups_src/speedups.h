/* taskwatch._core._speedups: the per-task hot path in C (optional; _hotpath.py is the reference).
 *
 * Every task pays for the factory, the record, the creation-stack walk, the close at release and
 * the exception() override. In Python they cost about 500 bytecodes per task (3x plain uvloop on a
 * churn of trivial tasks); here they cost a few hundred nanoseconds. The logic mirrors the Python
 * closures in _hotpath.build() line by line, and every rare path (cancels, failures, orphans,
 * boundaries, wrapped coroutines, other factories, OpenTelemetry) calls back into the same Python
 * code, so the two implementations cannot drift apart in what they decide, only in speed.
 *
 * The sources, one concept a file (setup.py lists the .c files):
 *   speedups.h  this header: what the files share (structs, flag values, module-wide objects and
 *               the functions one file calls in another, named tw_*)
 *   interp.h    every use of CPython's interpreter internals (only recorder.c includes it)
 *   module.c    the module: its functions, PyInit (interned strings), now() and report_internal()
 *   record.c    RecordType: the fields of TaskRecord
 *   codes.c     the code classification cache: internal/boundary flags per code object
 *   recorder.c  the Recorder, the hot path: factory, record, creation stack, span gate, close
 *   task.c      asyncio's C Task read directly, and taskwatch's C subclass of it
 *   sampler.c   the CPU sampler's thread: asks the main thread for a sample while it is busy
 *   switches.c  each loop thread's longest stretch without a context switch (the watchdog's)
 */
#ifndef TW_SPEEDUPS_H
#define TW_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* What this header declares was static in a single file: it stays out of the module's exported
 * symbols (PyInit__speedups alone is exported), so nothing outside can interpose on it. */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define F_INTERNAL 1
#define F_BOUNDARY 2
/* TaskRecord.flags bits C sets: the values of taskwatch._record.RecordFlag (the module exports them
 * as FLAG_*; _record checks they match at import) */
#define PRECISE 64   /* a done callback closes the record */
#define RELEASED 128 /* closed when the task object was freed */

/* ---------------------------------------------------------------------------------------------
 * module.c: module-wide objects and helpers */

extern PyObject *s_cr_code, *s_gi_code, *s_tw_rec, *s_on_failed, *s_cancel_settled,
    *s_schedule_orphan_check, *s_trim_source_traceback, *s_context, *s_eager_start,
    *s_on_exception_read;
extern PyObject *kw_loop_context, *kw_loop_name_context, *kw_context;
extern long long next_id_value;

double tw_now(void);
#if defined(CLOCK_MONOTONIC)
/* A clock's reading in ns, or -1 (the sampler's and the context watcher's clocks; inline: the
 * watcher reads one at every context switch). */
static inline long long
tw_clock_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) {
        return -1;
    }
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif
void tw_report_internal(const char *where);

/* ---------------------------------------------------------------------------------------------
 * record.c: RecordType, the fields of TaskRecord */

/* One frame of a creation stack: the code object and the instruction offset (f_lasti). */
typedef struct {
    PyObject *code;
    int lasti;
} StackItem;

/* The creation stack lives inline (ob_size frames), with no tuple or int objects per task; the
 * flat (code, lasti, ...) tuple that Python code reads as rec.stack is built on first access. */
typedef struct {
    PyObject_VAR_HEAD
    PyObject *weakreflist;
    long long id;
    PyObject *stack; /* the tuple form, once built (or set from Python); NULL until then */
    PyObject *coro, *parent, *state, *name, *cancels;
    PyObject *exc_type, *exc_message, *exc_stack, *span;
    double created, ended;
    double busy; /* CPU seconds the sampler (sampler.c, _watchdog/_cpu.py) found it running */
    Py_ssize_t live_children;
    long flags;
    char internal;
    StackItem items[1];
} RecordObject;

extern PyTypeObject *RecordType; /* a heap type without GC (made in PyInit), see record.c */
extern PyType_Spec record_spec;

#define IS_RECORD(o) Py_IS_TYPE((o), RecordType)

PyObject *tw_record_stack(RecordObject *self);

/* ---------------------------------------------------------------------------------------------
 * codes.c: the code classification cache */

extern PyObject *classify_fn;        /* _sites.is_internal */
extern PyObject *boundary_set;       /* _sites._boundary (ids) */
extern PyObject *made_by_library_fn; /* _sites.made_by_library */

void tw_code_cache_clear(void);
int tw_code_flags(PyObject *code);

/* ---------------------------------------------------------------------------------------------
 * recorder.c: the Recorder, the hot path of one probe. Calling it is the task factory. */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *probe;
    PyObject *py_factory, *py_create_task; /* the Python paths, for everything but the common case */
    /* _hotpath.outcome(task) and the probe's watch_done(task): how the Python path reads and
     * watches tasks and futures of other kinds than the C Tasks (see is_c_task) */
    PyObject *outcome, *watch_done;
    PyObject *at_boundary;                 /* _sites.capture_at_boundary(frame, depth) */
    PyObject *wrappers, *unwrap;           /* _hotpath.WRAPPERS, _hotpath.unwrap */
    /* The running task: asyncio.current_task (3.14+, where C Tasks live on the thread state) or
     * None, then the dict asyncio.tasks._current_tasks (3.11-3.13: every task; 3.14+: asyncio's
     * pure-Python Tasks only) or None. */
    PyObject *current_task, *current;
    PyObject *lineage;                     /* _hotpath.LINEAGE */
    PyObject *task_type, *record_type;
    PyObject *history, *history_append;
    PyObject *done_ctx, *on_end;
    PyObject *late; /* after the loop retired: records go to this callable instead of history */
    PyObject *on_create;  /* None, or the probe's on_create(rec, context) hook (OpenTelemetry) */
    PyObject *c_on_done;  /* this recorder's done callback, as a C function object */
    /* The span gate (spans="interesting"): lets C skip on_create/on_end for tasks that cannot be
     * spans, by the same tests as TaskSpans.on_create_interesting/on_end, reading only what
     * TaskSpans.c_gate() hands over (documented there). NULL: no gate. */
    PyObject *gate_spans, *gate_current_span, *gate_invalid_span, *gate_span_type,
             *gate_sampled_out;
    PyObject *gate_pending, *gate_deferred;
    PyObject *gate_state; /* list: [record_duration or None, outcomes] */
    double gate_threshold;
    long gate_mask;
    int precise; /* every task gets a done callback: exact ends (spans) */
    PyObject *st_pending, *st_finished, *st_failed, *st_cancelled;
    Py_ssize_t maxlen, off_rec, off_release;
    int depth, fast;
    long long created, finished, failed, cancelled, dropped;
} RecorderObject;

extern PyTypeObject RecorderType;

int tw_do_close(RecorderObject *self, PyObject *task, RecordObject *rec);
void tw_do_release(RecorderObject *self, PyObject *task);

/* ---------------------------------------------------------------------------------------------
 * task.c: asyncio's C Task read directly, and taskwatch's C subclass of it */

extern PyTypeObject *tw_task_type;   /* taskwatch's C Task, made by task_type() */
extern PyTypeObject *base_task_type; /* _asyncio.Task, once task_type() ran */

/* The objects whose C layout and methods the accelerator reads directly: exactly asyncio's C
 * Task or taskwatch's C Task (which overrides none of the methods read here). Anything else a
 * program hands to a loop, its factory or asyncio (a Task subclass that may override them,
 * asyncio's pure-Python Task, a Future, a duck-typed future) is read through its Python
 * attributes, by the same Python helpers the pure-Python hot path uses. Before task_type() ran,
 * nothing is. */
static inline int
is_c_task(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    return (tp == tw_task_type || tp == base_task_type) && tp != NULL;
}

/* asyncio.Task's own methods and attributes, called without a lookup per call (set by task_type). */
typedef struct {
    PyObject *name;
    PyObject *descr;
    PyCFunction meth; /* set when the method is a plain METH_NOARGS C function */
} Method;

extern Method m_get_name, m_cancelled, m_done, m_add_done_callback;

/* A data descriptor of asyncio.Task (_exception, _source_traceback), and its name. */
typedef struct {
    PyObject *name;
    PyObject *descr;
} Data;

extern Data d_exception_attr, d_source_tb;

/* The truth of a call's result, consumed: 1, 0, or -1 when the call (or the test) failed. */
static inline int
truth(PyObject *result)
{
    if (result == NULL) {
        return -1;
    }
    int t = PyObject_IsTrue(result);
    Py_DECREF(result);
    return t;
}

/* An attribute that may be missing, without raising and clearing AttributeError (which costs
 * more than the rest of a task's record on a framework whose own tasks carry none): 1 found,
 * 0 missing, -1 error. PyObject_GetOptionalAttr is 3.13's name for what 3.11 and 3.12 export as
 * _PyObject_LookupAttr. */
static inline int
tw_optional_attr(PyObject *obj, PyObject *name, PyObject **result)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, result);
#else
    return _PyObject_LookupAttr(obj, name, result);
#endif
}

PyObject *tw_call_method(Method *m, PyObject *self);
PyObject *tw_get_data(Data *d, PyObject *self);
/* the module's task_type(base, globals) */
PyObject *tw_make_task_type(PyObject *module, PyObject *args);

/* ---------------------------------------------------------------------------------------------
 * sampler.c: the module's sampler_start / sampler_stop / sampler_after_fork / sampler_stats */

PyObject *tw_sampler_start(PyObject *module, PyObject *args);
PyObject *tw_sampler_stop(PyObject *module, PyObject *unused);
PyObject *tw_sampler_after_fork(PyObject *module, PyObject *unused);
PyObject *tw_sampler_stats(PyObject *module, PyObject *unused);
PyObject *tw_sampler_totals(PyObject *module, PyObject *unused);

/* ---------------------------------------------------------------------------------------------
 * switches.c: the module's switches_watch / _unwatch / _gap / _stop / _after_fork */

PyObject *tw_switches_watch(PyObject *module, PyObject *arg);
PyObject *tw_switches_unwatch(PyObject *module, PyObject *arg);
PyObject *tw_switches_gap(PyObject *module, PyObject *arg);
PyObject *tw_switches_stop(PyObject *module, PyObject *unused);
PyObject *tw_switches_after_fork(PyObject *module, PyObject *unused);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif /* TW_SPEEDUPS_H */
