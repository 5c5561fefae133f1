/* taskwatch._speedups: the per-task hot path in C (optional; taskwatch/_hotpath.py is the reference).
 *
 * Every task pays for the factory, the record, the creation-stack walk, the close at release and
 * the exception() override. In Python they cost about 500 bytecodes per task (3x plain uvloop on a
 * churn of trivial tasks); here they cost a few hundred nanoseconds. The logic mirrors the Python
 * closures in _hotpath.build() line by line, and every rare path (cancels, failures, orphans,
 * boundaries, wrapped coroutines, other factories, OpenTelemetry) calls back into the same Python
 * code, so the two implementations cannot drift apart in what they decide, only in speed.
 *
 * Records (RecordType) are not tracked by the cyclic GC: they reference only older records, code
 * objects, tuples, strings and span objects, never anything that leads back to them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* 3.11-3.13: walk the interpreter's own frames, so recording a task never makes frame objects (on
 * 3.11+ PyEval_GetFrame allocates one for asyncio.create_task's frame on every call). These
 * structures are internal, hence pinned to the versions this file was checked against; any other
 * version takes the public frame API. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#define TW_FAST_FRAMES 1
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#if PY_VERSION_HEX >= 0x030D0000
#define TW_TOP_FRAME(ts) ((ts)->current_frame)
#define TW_FRAME_CODE(f) ((PyObject *)_PyFrame_GetCode(f))
#else
#define TW_TOP_FRAME(ts) ((ts)->cframe->current_frame)
#define TW_FRAME_CODE(f) ((PyObject *)(f)->f_code)
#endif
#endif

#define F_INTERNAL 1
#define F_BOUNDARY 2
/* TaskRecord.flags bits C sets: the values of taskwatch._record.RecordFlag (the module exports them
 * as FLAG_*; _record checks they match at import) */
#define PRECISE 64   /* a done callback closes the record */
#define RELEASED 128 /* closed when the task object was freed */
#define MAX_DEPTH 64

static PyObject *s_cr_code, *s_gi_code, *s_add_done_callback, *s_tw_rec, *s_on_failed, *s_cancel_settled,
    *s_schedule_orphan_check, *s_trim_source_traceback, *s_context, *s_eager_start,
    *s_on_exception_read;
static PyObject *kw_loop_context, *kw_loop_name_context, *kw_context;
static PyObject *internal_error_fn; /* taskwatch._guard.internal_error */
#if !defined(__linux__)
static PyObject *monotonic_fn; /* time.monotonic, off Linux */
#endif
static long long next_id_value;

/* ---------------------------------------------------------------------------------------------
 * helpers */

static double
now(void)
{
#if defined(__linux__)
    /* time.monotonic() reads this same clock on Linux. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#else
    PyObject *r = PyObject_CallNoArgs(monotonic_fn);
    double v = r ? PyFloat_AsDouble(r) : 0.0;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        PyErr_Clear();
    }
    return v;
#endif
}

/* Hand the pending exception to taskwatch's internal_error(where) as the handled exception, so it
 * is counted and logged once like every other internal error, then clear it. */
static void
report_internal(const char *where)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    if (internal_error_fn != NULL && value != NULL) {
        PyObject *prev = PyErr_GetHandledException();
        PyErr_SetHandledException(value);
        PyObject *r = PyObject_CallFunction(internal_error_fn, "s", where);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
        PyErr_SetHandledException(prev);
        Py_XDECREF(prev);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* ---------------------------------------------------------------------------------------------
 * RecordType: the fields of TaskRecord (taskwatch/_record.py adds the methods) */

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
    Py_ssize_t live_children;
    long flags;
    char internal;
    StackItem items[1];
} RecordObject;

static PyTypeObject *RecordType; /* a heap type without GC (made in PyInit), see the top */

static void
record_dealloc(RecordObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_CLEAR(self->items[i].code);
    }
    Py_SET_SIZE(self, 0);
    Py_CLEAR(self->stack);
    Py_CLEAR(self->coro);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->state);
    Py_CLEAR(self->name);
    Py_CLEAR(self->cancels);
    Py_CLEAR(self->exc_type);
    Py_CLEAR(self->exc_message);
    Py_CLEAR(self->exc_stack);
    Py_CLEAR(self->span);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef record_members[] = {
    {"id", T_LONGLONG, offsetof(RecordObject, id), 0, NULL},
    {"coro", T_OBJECT_EX, offsetof(RecordObject, coro), 0, NULL},
    {"parent", T_OBJECT_EX, offsetof(RecordObject, parent), 0, NULL},
    {"state", T_OBJECT_EX, offsetof(RecordObject, state), 0, NULL},
    {"name", T_OBJECT_EX, offsetof(RecordObject, name), 0, NULL},
    {"cancels", T_OBJECT_EX, offsetof(RecordObject, cancels), 0, NULL},
    {"exc_type", T_OBJECT_EX, offsetof(RecordObject, exc_type), 0, NULL},
    {"exc_message", T_OBJECT_EX, offsetof(RecordObject, exc_message), 0, NULL},
    {"exc_stack", T_OBJECT_EX, offsetof(RecordObject, exc_stack), 0, NULL},
    {"span", T_OBJECT_EX, offsetof(RecordObject, span), 0, NULL},
    {"created", T_DOUBLE, offsetof(RecordObject, created), 0, NULL},
    {"ended", T_DOUBLE, offsetof(RecordObject, ended), 0, NULL},
    {"live_children", T_PYSSIZET, offsetof(RecordObject, live_children), 0, NULL},
    {"flags", T_LONG, offsetof(RecordObject, flags), 0, NULL},
    {"internal", T_BOOL, offsetof(RecordObject, internal), 0, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RecordObject, weakreflist), READONLY, NULL},
    {NULL},
};

/* rec.stack: the flat (code, lasti, ...) tuple, or None (no user frame). New reference. */
static PyObject *
record_stack(RecordObject *self)
{
    if (self->stack != NULL) {
        return Py_NewRef(self->stack);
    }
    Py_ssize_t n = Py_SIZE(self);
    if (n == 0) {
        Py_RETURN_NONE;
    }
    PyObject *out = PyTuple_New(2 * n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lasti = PyLong_FromLong(self->items[i].lasti);
        if (lasti == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, 2 * i, Py_NewRef(self->items[i].code));
        PyTuple_SET_ITEM(out, 2 * i + 1, lasti);
    }
    self->stack = Py_NewRef(out);
    return out;
}

static PyObject *
record_get_stack(RecordObject *self, void *closure)
{
    return record_stack(self);
}

static int
record_set_stack(RecordObject *self, PyObject *value, void *closure)
{
    Py_XINCREF(value);
    Py_XSETREF(self->stack, value);
    return 0;
}

static PyGetSetDef record_getset[] = {
    {"stack", (getter)record_get_stack, (setter)record_set_stack,
     "the creation stack: a flat (code, lasti, ...) tuple, innermost first, or None", NULL},
    {NULL},
};

/* A heap type, so taskwatch/_record.py can add TaskRecord's Python methods to it, but made from a
 * spec without Py_TPFLAGS_HAVE_GC: a Python subclass would make every record GC-tracked. */
static PyType_Slot record_slots[] = {
    {Py_tp_dealloc, record_dealloc},
    {Py_tp_members, record_members},
    {Py_tp_getset, record_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "The record of one task (fields in C; methods added by taskwatch._record)."},
    {0, NULL},
};

static PyType_Spec record_spec = {
    "taskwatch._record.TaskRecord",
    offsetof(RecordObject, items),
    sizeof(StackItem),
    Py_TPFLAGS_DEFAULT,
    record_slots,
};

#define IS_RECORD(o) Py_IS_TYPE((o), RecordType)

static PyTypeObject *tw_task_type;   /* taskwatch's C Task, made by task_type() */
static PyTypeObject *base_task_type; /* _asyncio.Task, once task_type() ran */

/* The objects whose C layout and methods this file reads directly: exactly asyncio's C Task or
 * taskwatch's C Task (which overrides none of the methods read here). Anything else a program
 * hands to a loop, its factory or asyncio (a Task subclass that may override them, asyncio's
 * pure-Python Task, a Future, a duck-typed future) is read through its Python attributes, by
 * the same Python helpers the pure-Python hot path uses. Before task_type() ran, nothing is. */
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

static Method m_get_name, m_cancelled, m_done, m_add_done_callback;

/* A data descriptor of asyncio.Task (_exception, _source_traceback), and its name. */
typedef struct {
    PyObject *name;
    PyObject *descr;
} Data;

static Data d_exception_attr, d_source_tb;

/* The truth of a call's result, consumed: 1, 0, or -1 when the call (or the test) failed. */
static int
truth(PyObject *result)
{
    if (result == NULL) {
        return -1;
    }
    int t = PyObject_IsTrue(result);
    Py_DECREF(result);
    return t;
}

/* asyncio.Task's method ``m`` on self: its C function directly on asyncio's and taskwatch's C
 * Tasks, a normal method call on anything else. */
static PyObject *
call_method(Method *m, PyObject *self)
{
    if (!is_c_task(self)) {
        return PyObject_CallMethodNoArgs(self, m->name);
    }
    if (m->meth != NULL) {
        return m->meth(self, NULL);
    }
    return PyObject_Vectorcall(m->descr, &self, 1, NULL);
}

/* asyncio.Task's attribute ``d`` of self: its getter directly on asyncio's and taskwatch's C
 * Tasks; on anything else the attribute, or None when the object has none. */
static PyObject *
get_data(Data *d, PyObject *self)
{
    if (!is_c_task(self)) {
        PyObject *v = PyObject_GetAttr(self, d->name);
        if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return v;
    }
    PyObject *descr = d->descr;
    if (Py_IS_TYPE(descr, &PyGetSetDescr_Type)) { /* asyncio's own getter, without dispatch */
        PyGetSetDef *def = ((PyGetSetDescrObject *)descr)->d_getset;
        if (def->get != NULL) {
            return def->get(self, def->closure);
        }
    }
    return Py_TYPE(descr)->tp_descr_get(descr, self, (PyObject *)Py_TYPE(self));
}

static int
bind_method(PyTypeObject *base, const char *name, Method *m)
{
    PyObject *n = PyUnicode_InternFromString(name);
    if (n == NULL) {
        return -1;
    }
    Py_XSETREF(m->name, n);
    PyObject *d = PyObject_GetAttr((PyObject *)base, n);
    if (d == NULL) {
        return -1;
    }
    Py_XSETREF(m->descr, d);
    m->meth = NULL;
    if (Py_IS_TYPE(d, &PyMethodDescr_Type)) {
        PyMethodDef *def = ((PyMethodDescrObject *)d)->d_method;
        if (def->ml_flags == METH_NOARGS) {
            m->meth = def->ml_meth;
        }
    }
    return 0;
}

static int
bind_data(PyTypeObject *base, const char *name, Data *out)
{
    PyObject *n = PyUnicode_InternFromString(name);
    if (n == NULL) {
        return -1;
    }
    Py_XSETREF(out->name, n);
    PyObject *d = PyObject_GetAttr((PyObject *)base, n);
    if (d == NULL) {
        return -1;
    }
    if (Py_TYPE(d)->tp_descr_get == NULL) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "asyncio.Task.%s is not a descriptor", name);
        return -1;
    }
    Py_XSETREF(out->descr, d);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Code classification cache: code pointer -> internal/boundary flags, with the code kept alive so
 * a pointer is never confused with a reused one. Misses ask _sites.is_internal and the boundary
 * set; _sites calls invalidate() whenever either changes. */

typedef struct {
    PyObject *code;
    int flags;
} CodeEntry;

#define CACHE_SIZE (1 << 15)
#define CACHE_LIMIT (CACHE_SIZE / 2)
static CodeEntry code_cache[CACHE_SIZE];
static Py_ssize_t code_cache_count;
static PyObject *classify_fn; /* _sites.is_internal */
static PyObject *boundary_set; /* _sites._boundary (ids) */
static PyObject *made_by_library_fn; /* _sites.made_by_library */

static void
cache_clear(void)
{
    for (Py_ssize_t i = 0; i < CACHE_SIZE; i++) {
        Py_CLEAR(code_cache[i].code);
    }
    code_cache_count = 0;
}

static int
code_flags(PyObject *code)
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
        PyErr_SetString(PyExc_RuntimeError, "taskwatch._speedups is not configured");
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
        cache_clear();
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

/* ---------------------------------------------------------------------------------------------
 * Recorder: the hot path of one probe. Calling it is the task factory. */

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
    PyObject *gate_state; /* list: [record_duration or None, waiting() or None, names, outcomes] */
    double gate_threshold;
    long gate_mask;
    int precise; /* every task gets a done callback: exact ends (spans) */
    PyObject *st_pending, *st_finished, *st_failed, *st_cancelled;
    Py_ssize_t maxlen, off_rec, off_release;
    int depth, fast;
    long long created, finished, failed, cancelled, dropped;
} RecorderObject;

static PyTypeObject RecorderType;

static inline PyObject **
slot(PyObject *obj, Py_ssize_t offset)
{
    return (PyObject **)((char *)obj + offset);
}

/* Add this recorder's done callback to ``task``: task.add_done_callback(on_done, context=ctx)
 * without a lookup on the C Tasks, the Python path's watch_done() on any other kind. 0, or -1. */
static int
watch_done(RecorderObject *self, PyObject *task)
{
    PyObject *r;
    if (is_c_task(task) && m_add_done_callback.descr != NULL) {
        PyObject *args[3] = {task, self->c_on_done, self->done_ctx};
        r = PyObject_Vectorcall(m_add_done_callback.descr, args, 2, kw_context);
    }
    else {
        r = PyObject_CallOneArg(self->watch_done, task);
    }
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The user's creation stack at frame, into items (owned code references): returns the number of
 * frames (0: no user frame), or -1 on error. A walk that meets a loop frame asks the Python slow
 * path and puts its answer (a tuple or None) in *other instead. */
static int
capture(RecorderObject *self, PyFrameObject *frame, StackItem *items, PyObject **other)
{
    int n = 0;
    PyFrameObject *f = frame;
    Py_XINCREF(f);
    while (f != NULL) {
        PyObject *code = (PyObject *)PyFrame_GetCode(f);
        int fl = code_flags(code);
        if (fl < 0) {
            Py_DECREF(code);
            Py_DECREF(f);
            return -1;
        }
        if (!(fl & F_INTERNAL)) {
            for (;;) {
                items[n].code = code;
                items[n].lasti = PyFrame_GetLasti(f);
                n++;
                PyFrameObject *back = n < self->depth ? PyFrame_GetBack(f) : NULL;
                Py_DECREF(f);
                f = back;
                if (f == NULL) {
                    return n;
                }
                code = (PyObject *)PyFrame_GetCode(f);
                fl = code_flags(code);
                if (fl < 0 || (fl & F_INTERNAL)) {
                    Py_DECREF(code);
                    Py_DECREF(f);
                    if (fl < 0) {
                        for (int i = 0; i < n; i++) {
                            Py_DECREF(items[i].code);
                        }
                        return -1;
                    }
                    return n;
                }
            }
        }
        Py_DECREF(code);
        if (fl & F_BOUNDARY) { /* a loop frame: the main task, or a callback's task */
            Py_DECREF(f);
            *other = PyObject_CallFunction(self->at_boundary, "Oi", (PyObject *)frame, self->depth);
            return *other == NULL ? -1 : 0;
        }
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    return 0;
}

#ifdef TW_FAST_FRAMES
static _PyInterpreterFrame *
first_complete(_PyInterpreterFrame *f)
{
    while (f != NULL && _PyFrame_IsIncomplete(f)) {
        f = f->previous;
    }
    return f;
}
#endif

/* capture() from the running frame (the task factory has no frame of its own). */
static int
capture_current(RecorderObject *self, StackItem *items, PyObject **other)
{
#ifdef TW_FAST_FRAMES
    int n = 0;
    _PyInterpreterFrame *f = first_complete(TW_TOP_FRAME(PyThreadState_Get()));
    while (f != NULL) {
        PyObject *code = TW_FRAME_CODE(f);
        int fl = code_flags(code);
        if (fl < 0) {
            goto error;
        }
        if (n > 0) { /* collecting the contiguous user frames after the site */
            if (fl & F_INTERNAL) {
                return n;
            }
        }
        else if (fl & F_INTERNAL) {
            if (fl & F_BOUNDARY) { /* a loop frame: the main task, or a callback's task */
                *other = PyObject_CallFunction(self->at_boundary, "Oi", (PyObject *)PyEval_GetFrame(),
                                               self->depth);
                return *other == NULL ? -1 : 0;
            }
            f = first_complete(f->previous);
            continue;
        }
        items[n].code = Py_NewRef(code);
        items[n].lasti = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
        if (++n >= self->depth) {
            return n;
        }
        f = first_complete(f->previous);
    }
    return n;
error:
    for (int i = 0; i < n; i++) {
        Py_DECREF(items[i].code);
    }
    return -1;
#else
    return capture(self, PyEval_GetFrame(), items, other);
#endif
}

static PyObject *
coro_code(RecorderObject *self, PyObject *coro)
{
#if PY_VERSION_HEX < 0x030C0000
    PyObject *code = PyCoro_CheckExact(coro) ? Py_NewRef((PyObject *)((PyCoroObject *)coro)->cr_code)
                                             : PyObject_GetAttr(coro, s_cr_code);
#else
    PyObject *code = PyObject_GetAttr(coro, s_cr_code);
#endif
    if (code == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        code = PyObject_GetAttr(coro, s_gi_code);
        if (code == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return NULL;
            }
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }
    if (PyDict_GET_SIZE(self->wrappers) > 0) {
        PyObject *key = PyLong_FromVoidPtr(code);
        if (key == NULL) {
            Py_DECREF(code);
            return NULL;
        }
        int found = PyDict_Contains(self->wrappers, key);
        Py_DECREF(key);
        if (found < 0) {
            Py_DECREF(code);
            return NULL;
        }
        if (found) {
            PyObject *inner = PyObject_CallFunctionObjArgs(self->unwrap, coro, code, NULL);
            Py_DECREF(code);
            return inner;
        }
    }
    return code;
}

/* Site, coroutine, parent and time, taken before the task exists. New reference or NULL. */
static PyObject *
do_record(RecorderObject *self, PyObject *loop, PyObject *coro, PyFrameObject *frame, int current)
{
    PyObject *parent = NULL, *cur = NULL, *code = NULL, *other = NULL;
    StackItem items[MAX_DEPTH];
    int n = 0;
    if (self->current_task != Py_None) {
        cur = PyObject_CallOneArg(self->current_task, loop);
        if (cur == NULL) {
            return NULL;
        }
        if (cur == Py_None) {
            Py_CLEAR(cur);
        }
    }
    if (cur == NULL && self->current != Py_None) {
        cur = PyDict_GetItemWithError(self->current, loop);
        if (cur == NULL && PyErr_Occurred()) {
            return NULL;
        }
        Py_XINCREF(cur);
    }
    if (cur != NULL && cur != Py_None) {
        PyObject *p;
        if (Py_IS_TYPE(cur, (PyTypeObject *)self->task_type)) {
            p = *slot(cur, self->off_rec);
            Py_XINCREF(p);
        }
        else { /* not watched, or a task of another kind (a duck-typed one included) */
            p = PyObject_GetAttr(cur, s_tw_rec);
            if (p == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    goto error;
                }
                PyErr_Clear();
            }
        }
        if (p != NULL && !IS_RECORD(p)) {
            Py_CLEAR(p); /* not taskwatch's record: the lineage says */
        }
        if (p != NULL) {
            parent = p;
            if (!(((RecordObject *)p)->flags & PRECISE)) {
                /* A parent's end must be seen when it happens (orphaned children). */
                ((RecordObject *)p)->flags |= PRECISE;
                if (watch_done(self, cur) < 0) {
                    goto error;
                }
            }
        }
    }
    if (parent == NULL) {
        if (PyContextVar_Get(self->lineage, Py_None, &parent) < 0) {
            goto error;
        }
    }
    code = coro_code(self, coro);
    if (code == NULL) {
        goto error;
    }
    n = current ? capture_current(self, items, &other) : capture(self, frame, items, &other);
    if (n < 0) {
        n = 0;
        goto error;
    }
    PyTypeObject *rt = (PyTypeObject *)self->record_type;
    RecordObject *rec = (RecordObject *)rt->tp_alloc(rt, n);
    if (rec == NULL) {
        goto error;
    }
    memcpy(rec->items, items, n * sizeof(StackItem));
    rec->id = ++next_id_value;
    rec->stack = other; /* only from the boundary slow path */
    rec->coro = code;
    rec->parent = parent;
    rec->created = now();
    rec->ended = 0.0;
    Py_INCREF(self->st_pending);
    rec->state = self->st_pending;
    Py_INCREF(Py_None);
    rec->name = Py_None;
    Py_INCREF(Py_None);
    rec->cancels = Py_None;
    rec->live_children = 0;
    rec->flags = 0;
    rec->internal = n == 0 && (other == NULL || other == Py_None);
    if (code != Py_None) {
        int fl = code_flags(code);
        if (fl < 0) {
            Py_DECREF(rec);
            Py_XDECREF(cur);
            return NULL;
        }
        if (fl & F_INTERNAL && !rec->internal) {
            /* asyncio's own tasks (shutdown_asyncgens, staggered...), unless the program made it
             * (create_task(event.wait())): rare, so Python decides */
            PyObject *made = PyObject_CallOneArg(made_by_library_fn,
                                                 frame != NULL ? (PyObject *)frame : Py_None);
            int yes = made == NULL ? -1 : PyObject_IsTrue(made);
            Py_XDECREF(made);
            if (yes < 0) {
                Py_DECREF(rec);
                Py_XDECREF(cur);
                return NULL;
            }
            rec->internal = (char)yes;
        }
    }
    if (IS_RECORD(parent)) {
        ((RecordObject *)parent)->live_children++;
    }
    self->created++;
    Py_XDECREF(cur);
    return (PyObject *)rec;
error:
    Py_XDECREF(cur);
    Py_XDECREF(parent);
    Py_XDECREF(code);
    Py_XDECREF(other);
    for (int i = 0; i < n; i++) {
        Py_DECREF(items[i].code);
    }
    return NULL;
}

static void
undo(PyObject *rec)
{
    if (rec != NULL && IS_RECORD(rec)) {
        PyObject *parent = ((RecordObject *)rec)->parent;
        if (parent != NULL && IS_RECORD(parent)) {
            ((RecordObject *)parent)->live_children--;
        }
    }
}

/* A fresh copy of the current context carrying the lineage. */
static PyObject *
own_context(RecorderObject *self, PyObject *rec)
{
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        return NULL;
    }
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return NULL;
    }
    PyObject *token = PyContextVar_Set(self->lineage, rec);
    if (PyContext_Exit(ctx) < 0 || token == NULL) {
        Py_XDECREF(token);
        Py_DECREF(ctx);
        return NULL;
    }
    Py_DECREF(token);
    return ctx;
}

static PyObject *s_co_name;

static int
awaited_by_findings(PyObject *pending, PyObject *deferred, RecordObject *rec)
{
    if (!PyDict_GET_SIZE(pending) && !PyDict_GET_SIZE(deferred)) {
        return 0;
    }
    PyObject *key = PyLong_FromLongLong(rec->id);
    if (key == NULL) {
        return -1;
    }
    int in = PyDict_Contains(pending, key);
    if (in == 0) {
        in = PyDict_Contains(deferred, key);
    }
    Py_DECREF(key);
    return in;
}

static int
gate_create(RecorderObject *self, RecordObject *rec, PyObject *ctx)
{
    int slow = 0;
    if (self->gate_spans != NULL) {
        /* trace.get_current_span(): anything but trace.INVALID_SPAN is for Python to judge */
        PyObject *span = PyObject_CallNoArgs(self->gate_current_span);
        if (span == NULL) {
            return -1;
        }
        slow = span != self->gate_invalid_span;
        Py_DECREF(span);
        PyObject *names = PyList_GET_ITEM(self->gate_state, 2);
        if (!slow && names != Py_None && rec->coro != NULL && rec->coro != Py_None) {
            Py_INCREF(names);
            PyObject *name = PyObject_GetAttr(rec->coro, s_co_name);
            slow = name == NULL ? -1 : PySequence_Contains(names, name);
            Py_XDECREF(name);
            Py_DECREF(names);
            if (slow < 0) {
                return -1;
            }
        }
        if (!slow) {
            Py_XINCREF(rec->parent);
            Py_XSETREF(rec->span, rec->parent);
            return 0;
        }
    }
    PyObject *args[2] = {(PyObject *)rec, ctx != NULL ? ctx : Py_None};
    PyObject *r = PyObject_Vectorcall(self->on_create, args, 2, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* At the end, spans="interesting": 1 when on_end would only forget the task (finished in time,
 * no finding, nothing waiting for it), 0 when on_end must run, -1 on error. */
static int
gate_end(RecorderObject *self, RecordObject *rec)
{
    if (self->gate_spans == NULL) {
        return 0;
    }
    if (PyList_GET_ITEM(self->gate_state, 0) != Py_None) {
        return 0; /* the task duration histogram records every task */
    }
    PyObject *waiting = PyList_GET_ITEM(self->gate_state, 1);
    if (waiting != Py_None) { /* no MeterProvider yet: is there one now (durations recorded)? */
        Py_INCREF(waiting);
        PyObject *still = PyObject_CallNoArgs(waiting);
        Py_DECREF(waiting);
        int yes = still == NULL ? -1 : PyObject_IsTrue(still);
        Py_XDECREF(still);
        if (yes <= 0) {
            return yes;
        }
    }
    PyObject *span = rec->span != NULL ? rec->span : rec->parent;
    if (span != NULL && Py_IS_TYPE(span, (PyTypeObject *)self->gate_span_type)) {
        return 0;
    }
    if (span == self->gate_sampled_out) {
        return 1;
    }
    if (rec->state != self->st_finished || rec->ended - rec->created >= self->gate_threshold ||
        (rec->flags & self->gate_mask)) {
        return 0;
    }
    int in = awaited_by_findings(self->gate_pending, self->gate_deferred, rec);
    if (in != 0) {
        return in < 0 ? -1 : 0;
    }
    Py_INCREF(Py_None);
    Py_XSETREF(rec->span, Py_None);
    return 1;
}

/* Spans need the end of a task that has a span when it ends, not when it is freed. With the span
 * gate (spans="interesting") only a task that got its span at creation has a done callback: any
 * other is closed when taskwatch first sees it done (observe()), which for awaited, gathered and
 * TaskGroup tasks is when their awaiter's callback runs, the moment a callback of ours would. */
static int
needs_done_callback(RecorderObject *self, RecordObject *rec)
{
    if (!self->precise) {
        return 0;
    }
    if (self->gate_spans == NULL) {
        return 1;
    }
    return rec->span != NULL && Py_IS_TYPE(rec->span, (PyTypeObject *)self->gate_span_type);
}

static void
attach(RecorderObject *self, PyObject *task, PyObject *rec)
{
    if (!Py_IS_TYPE(task, (PyTypeObject *)self->task_type)) {
        /* cannot happen (task_type has no __new__ of its own); never write its slots then */
        PyErr_SetString(PyExc_TypeError, "the task type made an object of another type");
        report_internal("task factory (attach)");
        return;
    }
    Py_INCREF(rec);
    Py_XSETREF(*slot(task, self->off_rec), rec);
    Py_INCREF(self);
    Py_XSETREF(*slot(task, self->off_release), (PyObject *)self);
    if (needs_done_callback(self, (RecordObject *)rec)) {
        ((RecordObject *)rec)->flags |= PRECISE;
        if (watch_done(self, task) < 0) {
            report_internal("task factory (attach)");
        }
    }
    PyObject *tb = get_data(&d_source_tb, task);
    if (tb == NULL) {
        report_internal("task factory (attach)");
        return;
    }
    int has_tb = PyObject_IsTrue(tb);
    if (has_tb > 0) { /* debug mode: drop taskwatch's frames, as the loop drops its own */
        PyObject *r = PyObject_CallMethodOneArg(self->probe, s_trim_source_traceback, tb);
        if (r == NULL) {
            report_internal("task factory (attach)");
        }
        Py_XDECREF(r);
    }
    else if (has_tb < 0) {
        report_internal("task factory (attach)");
    }
    Py_DECREF(tb);
}

/* Build the task exactly as the loop would without a factory, with taskwatch's record. */
static PyObject *
build_task(RecorderObject *self, PyObject *loop, PyObject *coro, PyObject *name, PyFrameObject *frame)
{
    PyObject *rec = do_record(self, loop, coro, frame, frame == NULL);
    PyObject *ctx = NULL;
    if (rec == NULL) {
        report_internal("task factory (record)");
    }
    else {
        ctx = own_context(self, rec);
        if (ctx == NULL) {
            report_internal("task factory (context)");
        }
        if (self->on_create != Py_None && gate_create(self, (RecordObject *)rec, ctx) < 0) {
            report_internal("on_create hook");
        }
    }
    PyObject *task;
    PyObject *context = ctx != NULL ? ctx : Py_None;
    if (name == NULL) {
        PyObject *args[3] = {coro, loop, context};
        task = PyObject_Vectorcall(self->task_type, args, 1, kw_loop_context);
    }
    else {
        PyObject *args[4] = {coro, loop, name, context};
        task = PyObject_Vectorcall(self->task_type, args, 1, kw_loop_name_context);
    }
    Py_XDECREF(ctx);
    if (task == NULL) {
        undo(rec);
        Py_XDECREF(rec);
        return NULL;
    }
    if (rec != NULL) {
        attach(self, task, rec);
        Py_DECREF(rec);
    }
    return task;
}

/* The task factory: factory(loop, coro, context=None, eager_start=None). */
static PyObject *
recorder_vectorcall(RecorderObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!self->fast || nargs != 2) {
        goto python;
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            PyObject *value = args[nargs + i];
            if (value != Py_None) {
                goto python;
            }
            if (key != s_context && key != s_eager_start &&
                PyUnicode_Compare(key, s_context) != 0 && PyUnicode_Compare(key, s_eager_start) != 0) {
                goto python;
            }
        }
    }
    return build_task(self, args[0], args[1], NULL, NULL); /* NULL: from the running frame */
python:
    return PyObject_Vectorcall(self->py_factory, args, nargsf, kwnames);
}

static PyObject *
recorder_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

/* create_task(loop, coro, name, context, frame): BaseEventLoop.create_task without a factory. */
static PyObject *
recorder_create_task(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "create_task(loop, coro, name, context, frame)");
        return NULL;
    }
    if (!self->fast || args[3] != Py_None || !PyFrame_Check(args[4])) {
        return PyObject_Vectorcall(self->py_create_task, args, nargs, NULL);
    }
    return build_task(self, args[0], args[1], args[2], (PyFrameObject *)args[4]);
}

static PyObject *
recorder_record(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record(loop, coro, frame)");
        return NULL;
    }
    PyFrameObject *frame = PyFrame_Check(args[2]) ? (PyFrameObject *)args[2] : NULL;
    PyObject *rec = do_record(self, args[0], args[1], frame, 0);
    if (rec == NULL) {
        report_internal("task factory (record)");
        Py_RETURN_NONE;
    }
    return rec;
}

static PyObject *
call_probe(RecorderObject *self, PyObject *name, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[4] = {self->probe, a, b, c};
    size_t n = c != NULL ? 4 : (b != NULL ? 3 : 2);
    return PyObject_VectorcallMethod(name, args, n, NULL);
}

/* Close a record: outcome, counters, history; rare cases go to the probe. */
static int
do_close(RecorderObject *self, PyObject *task, RecordObject *rec)
{
    PyObject *r, *exc = NULL;
    int is_cancelled;
    if (is_c_task(task)) {
        r = call_method(&m_get_name, task);
        if (r == NULL) {
            return -1;
        }
        Py_XSETREF(rec->name, r);
        is_cancelled = truth(call_method(&m_cancelled, task));
        if (is_cancelled < 0) {
            return -1;
        }
    }
    else { /* another factory's object: _hotpath.outcome reads it, as the Python path does */
        r = PyObject_CallOneArg(self->outcome, task);
        if (r == NULL) {
            return -1;
        }
        if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 3) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "outcome() must return (name, cancelled, exception)");
            return -1;
        }
        Py_XSETREF(rec->name, Py_NewRef(PyTuple_GET_ITEM(r, 0)));
        is_cancelled = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1));
        exc = Py_NewRef(PyTuple_GET_ITEM(r, 2));
        Py_DECREF(r);
        if (is_cancelled < 0) {
            Py_DECREF(exc);
            return -1;
        }
    }
    if (is_cancelled) {
        Py_XDECREF(exc);
        Py_INCREF(self->st_cancelled);
        Py_XSETREF(rec->state, self->st_cancelled);
        self->cancelled++;
    }
    else {
        if (exc == NULL) {
            exc = get_data(&d_exception_attr, task);
            if (exc == NULL) {
                return -1;
            }
        }
        if (exc == Py_None) {
            Py_INCREF(self->st_finished);
            Py_XSETREF(rec->state, self->st_finished);
        }
        else {
            Py_INCREF(self->st_failed);
            Py_XSETREF(rec->state, self->st_failed);
            self->failed++;
            r = call_probe(self, s_on_failed, task, (PyObject *)rec, exc);
            if (r == NULL) {
                Py_DECREF(exc);
                return -1;
            }
            Py_DECREF(r);
        }
        Py_DECREF(exc);
    }
    if (rec->cancels != NULL && rec->cancels != Py_None) { /* slow-cancel, swallowed-cancel */
        r = call_probe(self, s_cancel_settled, task, (PyObject *)rec, NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    self->finished++;
    PyObject *parent = rec->parent;
    if (parent != NULL && IS_RECORD(parent)) {
        RecordObject *p = (RecordObject *)parent;
        p->live_children--;
        if (p->ended != 0.0) { /* keep no chain of ended records: a brief copy will do */
            PyObject *stack = record_stack(p);
            if (stack == NULL) {
                return -1;
            }
            PyObject *brief = Py_BuildValue("(LOON)", p->id, p->name ? p->name : Py_None,
                                            p->coro ? p->coro : Py_None, stack);
            if (brief == NULL) {
                return -1;
            }
            Py_SETREF(rec->parent, brief);
        }
    }
    if (rec->live_children && !rec->internal) {
        r = call_probe(self, s_schedule_orphan_check, (PyObject *)rec, NULL, NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (self->late != NULL) {
        r = PyObject_CallOneArg(self->late, (PyObject *)rec);
    }
    else {
        Py_ssize_t len = PyObject_Length(self->history);
        if (len < 0) {
            return -1;
        }
        if (len == self->maxlen) {
            self->dropped++;
        }
        r = PyObject_CallOneArg(self->history_append, (PyObject *)rec);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    if (self->on_end != Py_None) {
        int skip = gate_end(self, rec);
        if (skip < 0) {
            return -1;
        }
        if (!skip) {
            PyObject *args[2] = {(PyObject *)rec, task};
            r = PyObject_Vectorcall(self->on_end, args, 2, NULL);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    }
    return 0;
}

static PyObject *
recorder_close(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !IS_RECORD(args[1])) {
        PyErr_SetString(PyExc_TypeError, "close(task, record)");
        return NULL;
    }
    if (do_close(self, args[0], (RecordObject *)args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The task object is being freed: tasks without a done callback are closed here. */
static void
do_release(RecorderObject *self, PyObject *task)
{
    if (!Py_IS_TYPE(task, (PyTypeObject *)self->task_type)) {
        return; /* only this recorder's tasks hold it as their release hook */
    }
    PyObject *rec = *slot(task, self->off_rec);
    if (rec == NULL || !IS_RECORD(rec) || ((RecordObject *)rec)->ended != 0.0) {
        return;
    }
    Py_INCREF(rec);
    int done = truth(call_method(&m_done, task));
    if (done > 0) {
        ((RecordObject *)rec)->ended = now();
        ((RecordObject *)rec)->flags |= RELEASED;
        done = do_close(self, task, (RecordObject *)rec);
    }
    if (done < 0) {
        report_internal("task release");
    }
    Py_DECREF(rec);
}

/* Check TaskSpans.c_all()'s tuple; the offsets of TaskSpan's _ctx, attached, creator, _ended. */
static PyObject *
recorder_configure(RecorderObject *self, PyObject *args)
{
    int fast;
    PyObject *on_end, *on_create, *gate;
    if (!PyArg_ParseTuple(args, "pOOO:configure", &fast, &on_end, &on_create, &gate)) {
        return NULL;
    }
    PyObject *spans = NULL, *current_span = NULL, *invalid_span = NULL, *span_type = NULL,
             *sampled_out = NULL, *pending = NULL, *deferred = NULL, *state = NULL;
    double threshold = 0.0;
    long mask = 0;
    if (gate != Py_None &&
        !PyArg_ParseTuple(gate, "OOOOOdlO!O!O!:gate", &spans, &current_span, &invalid_span,
                          &span_type, &sampled_out, &threshold, &mask, &PyDict_Type, &pending,
                          &PyDict_Type, &deferred, &PyList_Type, &state)) {
        return NULL;
    }
    if (state != NULL && PyList_GET_SIZE(state) != 4) {
        PyErr_SetString(PyExc_TypeError, "gate: the state list has 4 items");
        return NULL;
    }
    if (gate != Py_None && (!PyCallable_Check(current_span) || !PyType_Check(span_type))) {
        PyErr_SetString(PyExc_TypeError, "gate: get_current_span and a span type are needed");
        return NULL;
    }
    self->fast = 0; /* while the fields change */
#define SETX(field, value) do { Py_XINCREF(value); Py_XSETREF(self->field, value); } while (0)
    SETX(on_end, on_end);
    SETX(on_create, on_create);
    SETX(gate_spans, spans);
    SETX(gate_current_span, current_span);
    SETX(gate_invalid_span, invalid_span);
    SETX(gate_span_type, span_type);
    SETX(gate_sampled_out, sampled_out);
    SETX(gate_pending, pending);
    SETX(gate_deferred, deferred);
    SETX(gate_state, state);
#undef SETX
    self->gate_threshold = threshold;
    self->gate_mask = mask;
    self->fast = fast;
    Py_RETURN_NONE;
}

/* The done callback of tasks whose end matters when it happens (spans). */
static PyObject *
recorder_on_done(RecorderObject *self, PyObject *task)
{
    PyObject *rec;
    if (Py_IS_TYPE(task, (PyTypeObject *)self->task_type)) {
        rec = Py_XNewRef(*slot(task, self->off_rec));
    }
    else {
        rec = PyObject_GetAttr(task, s_tw_rec);
        if (rec == NULL) {
            PyErr_Clear();
        }
    }
    if (rec != NULL && IS_RECORD(rec) && ((RecordObject *)rec)->ended == 0.0) {
        ((RecordObject *)rec)->ended = now();
        if (do_close(self, task, (RecordObject *)rec) < 0) {
            report_internal("task done callback");
        }
    }
    Py_XDECREF(rec);
    Py_RETURN_NONE;
}

static PyMethodDef recorder_on_done_def = {
    "on_done", (PyCFunction)recorder_on_done, METH_O, "taskwatch's done callback (C)"};

static PyObject *
recorder_retarget(RecorderObject *self, PyObject *hook)
{
    Py_INCREF(hook);
    Py_XSETREF(self->late, hook);
    Py_RETURN_NONE;
}

static PyObject *
recorder_stats(RecorderObject *self, PyObject *unused)
{
    return Py_BuildValue("{sLsLsLsLsL}", "tasks_created", self->created, "tasks_finished",
                         self->finished, "tasks_failed", self->failed, "tasks_cancelled",
                         self->cancelled, "dropped_history", self->maxlen ? self->dropped : 0LL);
}

static int
recorder_init(RecorderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"probe", "py_factory", "py_create_task", "outcome", "watch_done",
                             "at_boundary", "wrappers", "unwrap", "current", "current_task",
                             "lineage", "task_type", "record_type", "history", "done_ctx",
                             "states", "depth", "precise", NULL};
    PyObject *probe, *py_factory, *py_create_task, *outcome, *watch_done_fn, *at_boundary,
        *wrappers, *unwrap, *current, *current_task, *lineage, *task_type, *record_type, *history,
        *done_ctx, *states;
    int depth, precise = 0;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOOO!OOOOO!O!OOO!i|p:Recorder", kwlist, &probe, &py_factory,
            &py_create_task, &outcome, &watch_done_fn, &at_boundary, &PyDict_Type, &wrappers,
            &unwrap, &current, &current_task, &lineage, &PyType_Type, &task_type, &PyType_Type,
            &record_type, &history, &done_ctx, &PyTuple_Type, &states, &depth, &precise)) {
        return -1;
    }
    if (task_type != (PyObject *)tw_task_type) {
        PyErr_SetString(PyExc_TypeError, "task_type must be the type task_type() made");
        return -1;
    }
    if (record_type != (PyObject *)RecordType) {
        PyErr_SetString(PyExc_TypeError, "record_type must be taskwatch._speedups.RecordType");
        return -1;
    }
    if (d_source_tb.descr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "task_type() must run before a Recorder is made");
        return -1;
    }
    if (current != Py_None && !PyDict_Check(current)) {
        PyErr_SetString(PyExc_TypeError, "current must be a dict or None");
        return -1;
    }
    if (PyTuple_GET_SIZE(states) != 4) {
        PyErr_SetString(PyExc_TypeError, "states: (pending, finished, failed, cancelled)");
        return -1;
    }
    if (depth < 1 || depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "depth must be from 1 to 64");
        return -1;
    }
    Py_ssize_t offsets[2];
    const char *names[2] = {"_tw_rec", "_tw_probe_release"};
    for (int i = 0; i < 2; i++) {
        PyObject *d = PyObject_GetAttrString(task_type, names[i]);
        if (d == NULL) {
            return -1;
        }
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "task_type.%s must be a slot", names[i]);
            return -1;
        }
        offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
    }
    PyObject *append = PyObject_GetAttrString(history, "append");
    if (append == NULL) {
        return -1;
    }
    PyObject *maxlen_obj = PyObject_GetAttrString(history, "maxlen");
    if (maxlen_obj == NULL) {
        Py_DECREF(append);
        return -1;
    }
    Py_ssize_t maxlen = maxlen_obj == Py_None ? 0 : PyLong_AsSsize_t(maxlen_obj);
    Py_DECREF(maxlen_obj);
    if (maxlen < 0 && PyErr_Occurred()) {
        Py_DECREF(append);
        return -1;
    }
#define SET(field, value) do { Py_INCREF(value); Py_XSETREF(self->field, value); } while (0)
    SET(probe, probe);
    SET(py_factory, py_factory);
    SET(py_create_task, py_create_task);
    SET(outcome, outcome);
    SET(watch_done, watch_done_fn);
    SET(at_boundary, at_boundary);
    SET(wrappers, wrappers);
    SET(unwrap, unwrap);
    SET(current, current);
    SET(current_task, current_task);
    SET(lineage, lineage);
    SET(task_type, task_type);
    SET(record_type, record_type);
    SET(history, history);
    Py_XSETREF(self->history_append, append);
    SET(done_ctx, done_ctx);
    SET(on_end, Py_None);
    SET(st_pending, PyTuple_GET_ITEM(states, 0));
    SET(st_finished, PyTuple_GET_ITEM(states, 1));
    SET(st_failed, PyTuple_GET_ITEM(states, 2));
    SET(st_cancelled, PyTuple_GET_ITEM(states, 3));
#undef SET
    PyObject *c_on_done = PyCFunction_New(&recorder_on_done_def, (PyObject *)self);
    if (c_on_done == NULL) {
        return -1;
    }
    Py_XSETREF(self->c_on_done, c_on_done);
    Py_INCREF(Py_None);
    Py_XSETREF(self->on_create, Py_None);
    self->precise = precise;
    self->maxlen = maxlen;
    self->off_rec = offsets[0];
    self->off_release = offsets[1];
    self->depth = depth;
    self->fast = 0;
    self->vectorcall = (vectorcallfunc)recorder_vectorcall;
    return 0;
}

static int
recorder_traverse(RecorderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->probe);
    Py_VISIT(self->py_factory);
    Py_VISIT(self->py_create_task);
    Py_VISIT(self->outcome);
    Py_VISIT(self->watch_done);
    Py_VISIT(self->at_boundary);
    Py_VISIT(self->wrappers);
    Py_VISIT(self->unwrap);
    Py_VISIT(self->current);
    Py_VISIT(self->current_task);
    Py_VISIT(self->lineage);
    Py_VISIT(self->task_type);
    Py_VISIT(self->record_type);
    Py_VISIT(self->history);
    Py_VISIT(self->history_append);
    Py_VISIT(self->done_ctx);
    Py_VISIT(self->on_end);
    Py_VISIT(self->late);
    Py_VISIT(self->on_create);
    Py_VISIT(self->c_on_done);
    Py_VISIT(self->gate_spans);
    Py_VISIT(self->gate_current_span);
    Py_VISIT(self->gate_invalid_span);
    Py_VISIT(self->gate_span_type);
    Py_VISIT(self->gate_sampled_out);
    Py_VISIT(self->gate_pending);
    Py_VISIT(self->gate_deferred);
    Py_VISIT(self->gate_state);
    return 0;
}

static int
recorder_clear(RecorderObject *self)
{
    Py_CLEAR(self->probe);
    Py_CLEAR(self->py_factory);
    Py_CLEAR(self->py_create_task);
    Py_CLEAR(self->outcome);
    Py_CLEAR(self->watch_done);
    Py_CLEAR(self->at_boundary);
    Py_CLEAR(self->wrappers);
    Py_CLEAR(self->unwrap);
    Py_CLEAR(self->current);
    Py_CLEAR(self->current_task);
    Py_CLEAR(self->lineage);
    Py_CLEAR(self->task_type);
    Py_CLEAR(self->record_type);
    Py_CLEAR(self->history);
    Py_CLEAR(self->history_append);
    Py_CLEAR(self->done_ctx);
    Py_CLEAR(self->on_end);
    Py_CLEAR(self->late);
    Py_CLEAR(self->on_create);
    Py_CLEAR(self->c_on_done);
    Py_CLEAR(self->gate_spans);
    Py_CLEAR(self->gate_current_span);
    Py_CLEAR(self->gate_invalid_span);
    Py_CLEAR(self->gate_span_type);
    Py_CLEAR(self->gate_sampled_out);
    Py_CLEAR(self->gate_pending);
    Py_CLEAR(self->gate_deferred);
    Py_CLEAR(self->gate_state);
    Py_CLEAR(self->st_pending);
    Py_CLEAR(self->st_finished);
    Py_CLEAR(self->st_failed);
    Py_CLEAR(self->st_cancelled);
    self->fast = 0;
    return 0;
}

static void
recorder_dealloc(RecorderObject *self)
{
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef recorder_methods[] = {
    {"record", (PyCFunction)(void (*)(void))recorder_record, METH_FASTCALL,
     "record(loop, coro, frame) -> TaskRecord or None"},
    {"create_task", (PyCFunction)(void (*)(void))recorder_create_task, METH_FASTCALL,
     "create_task(loop, coro, name, context, frame) -> task"},
    {"close", (PyCFunction)(void (*)(void))recorder_close, METH_FASTCALL,
     "close(task, record): outcome, counters, history"},
    {"configure", (PyCFunction)recorder_configure, METH_VARARGS,
     "configure(fast, on_end, on_create, gate): fast is the common case, which C handles"},
    {"stats", (PyCFunction)recorder_stats, METH_NOARGS, "the hot path's counters"},
    {"retarget", (PyCFunction)recorder_retarget, METH_O,
     "retarget(hook): after the loop retired, closed records go to hook(record)"},
    {NULL},
};

static PyMemberDef recorder_members[] = {
    {"probe", T_OBJECT, offsetof(RecorderObject, probe), 0, "the Probe this recorder serves"},
    {"on_done", T_OBJECT, offsetof(RecorderObject, c_on_done), READONLY,
     "the done callback of tasks whose end must be seen when it happens"},
    {NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskwatch._speedups.Recorder",
    .tp_basicsize = sizeof(RecorderObject),
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_vectorcall_offset = offsetof(RecorderObject, vectorcall),
    .tp_call = recorder_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The hot path of one probe; calling it is the loop's task factory.",
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_methods = recorder_methods,
    .tp_members = recorder_members,
    .tp_init = (initproc)recorder_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------------------------------
 * Task: taskwatch's subclass of the C asyncio Task, as a C type (see taskwatch/_task.py)
 *
 * A Python subclass with __slots__ costs every task a generic subtype_dealloc, subtype_traverse at
 * each GC pass and a __del__ looked up and called through slot_tp_finalize. This type has the same
 * two fields, a finalizer that closes the record and then runs asyncio's own, and exception() in
 * C; cancel() (and set_name on 3.13.0-3.13.2) stay in Python and are added by _task.py. */

typedef struct {
    PyObject *rec;
    PyObject *release;
} TaskExtra;

static Py_ssize_t task_extra_offset = -1;
static PyObject *task_module_dict; /* taskwatch._task's globals: on_exception_read */

#define EXTRA(o) ((TaskExtra *)((char *)(o) + task_extra_offset))

static int
twtask_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(EXTRA(self)->rec);
    Py_VISIT(EXTRA(self)->release);
    if (!(base_task_type->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        Py_VISIT(Py_TYPE(self)); /* a heap base's traverse visits the type itself */
    }
    return base_task_type->tp_traverse(self, visit, arg);
}

static int
twtask_clear(PyObject *self)
{
    Py_CLEAR(EXTRA(self)->rec);
    Py_CLEAR(EXTRA(self)->release);
    return base_task_type->tp_clear != NULL ? base_task_type->tp_clear(self) : 0;
}

/* Closing the record here costs far less than a done callback. asyncio's finalizer must run after:
 * it is what reports "exception was never retrieved" and "Task was destroyed but it is pending". */
static void
twtask_finalize(PyObject *self)
{
    PyObject *release = EXTRA(self)->release;
    if (release != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        Py_INCREF(release);
        if (Py_IS_TYPE(release, &RecorderType)) {
            do_release((RecorderObject *)release, self);
        }
        else { /* the pure-Python hot path's release hook (speedups=False) */
            PyObject *r = PyObject_CallOneArg(release, self);
            if (r == NULL) {
                PyErr_Clear(); /* it reports its own errors */
            }
            Py_XDECREF(r);
        }
        Py_DECREF(release);
        PyErr_Restore(type, value, tb);
    }
    if (base_task_type->tp_finalize != NULL) {
        base_task_type->tp_finalize(self);
    }
}

static void
twtask_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    /* asyncio's dealloc leaves the finalizer of a subclass to the subclass: run it while the
     * fields are intact (it marks the object finalized, so it never runs twice). */
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    Py_CLEAR(EXTRA(self)->rec);
    Py_CLEAR(EXTRA(self)->release);
    base_task_type->tp_dealloc(self);
    if (!(base_task_type->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        Py_DECREF(tp); /* a static base's dealloc does not release the heap subtype */
    }
}

static Method m_exception, m_result;

/* The task was seen done (done(), result() or exception() called on it; done: 1 known done, -1 to
 * check): with spans on, close a record that no done callback of ours will close. */
static void
observe(PyObject *task, int done)
{
    PyObject *rec = EXTRA(task)->rec, *release = EXTRA(task)->release;
    if (rec == NULL || release == NULL || !IS_RECORD(rec) || ((RecordObject *)rec)->ended != 0.0) {
        return;
    }
    int is_recorder = Py_IS_TYPE(release, &RecorderType);
    if (is_recorder && !((RecorderObject *)release)->precise) {
        return; /* no spans: records close when tasks are freed */
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_INCREF(rec);
    Py_INCREF(release);
    if (is_recorder) {
        if (done < 0) {
            done = truth(call_method(&m_done, task));
        }
        if (done > 0) {
            ((RecordObject *)rec)->ended = now();
            done = do_close((RecorderObject *)release, task, (RecordObject *)rec);
        }
        if (done < 0) {
            report_internal("task seen done");
        }
    }
    else { /* the pure-Python hot path's release hook, asked to close a task seen done */
        PyObject *r = PyObject_CallFunctionObjArgs(release, task, Py_True, NULL);
        if (r == NULL) {
            PyErr_Clear(); /* it reports its own errors */
        }
        Py_XDECREF(r);
    }
    Py_DECREF(rec);
    Py_DECREF(release);
    PyErr_Restore(type, value, tb);
}

static PyObject *
twtask_done(PyObject *self, PyObject *unused)
{
    PyObject *r = call_method(&m_done, self);
    if (r == Py_True) {
        observe(self, 1);
    }
    return r;
}

static PyObject *
twtask_result(PyObject *self, PyObject *unused)
{
    PyObject *r = call_method(&m_result, self);
    observe(self, r != NULL ? 1 : -1);
    return r;
}

static PyObject *
twtask_exception(PyObject *self, PyObject *unused)
{
    PyObject *exc = call_method(&m_exception, self);
    if (exc == NULL || exc == Py_None) {
        observe(self, exc != NULL ? 1 : -1); /* raised: cancelled (done) or not done yet */
        return exc;
    }
    PyObject *hook = PyDict_GetItemWithError(task_module_dict, s_on_exception_read);
    if (hook != NULL && hook != Py_None) {
        Py_INCREF(hook);
        PyObject *frame = (PyObject *)PyEval_GetFrame(); /* the caller's: no frame of ours */
        PyObject *r = PyObject_CallFunctionObjArgs(hook, self, frame ? frame : Py_None, NULL);
        Py_DECREF(hook);
        if (r == NULL) {
            report_internal("Task.exception");
        }
        Py_XDECREF(r);
    }
    else if (hook == NULL && PyErr_Occurred()) {
        report_internal("Task.exception");
    }
    observe(self, 1);
    return exc;
}

static PyMethodDef twtask_methods[] = {
    {"exception", twtask_exception, METH_NOARGS,
     "asyncio's Task.exception(), also telling taskwatch when a failed task's error is read."},
    {"done", twtask_done, METH_NOARGS, "asyncio's Task.done(), also telling taskwatch it ended."},
    {"result", twtask_result, METH_NOARGS, "asyncio's Task.result(), also telling taskwatch it ended."},
    {NULL},
};

static PyMemberDef twtask_members[] = {
    {"_tw_rec", T_OBJECT_EX, 0, 0, "taskwatch's record of this task"},
    {"_tw_probe_release", T_OBJECT_EX, 0, 0, "what closes the record when the task is freed"},
    {NULL},
};

/* task_type(base, globals) -> the C Task type; globals are taskwatch._task's (on_exception_read). */
static PyObject *
task_type(PyObject *module, PyObject *args)
{
    PyObject *base_obj, *globals;
    if (!PyArg_ParseTuple(args, "O!O!:task_type", &PyType_Type, &base_obj, &PyDict_Type, &globals)) {
        return NULL;
    }
    if (tw_task_type != NULL) {
        return Py_NewRef((PyObject *)tw_task_type);
    }
    PyTypeObject *base = (PyTypeObject *)base_obj;
    if (base->tp_finalize == NULL || base->tp_traverse == NULL || base->tp_itemsize != 0 ||
        !(base->tp_flags & Py_TPFLAGS_HAVE_GC) || !(base->tp_flags & Py_TPFLAGS_BASETYPE)) {
        PyErr_SetString(PyExc_TypeError, "base must be the C asyncio Task");
        return NULL;
    }
    if (bind_method(base, "get_name", &m_get_name) < 0 ||
        bind_method(base, "cancelled", &m_cancelled) < 0 ||
        bind_method(base, "done", &m_done) < 0 ||
        bind_method(base, "exception", &m_exception) < 0 ||
        bind_method(base, "result", &m_result) < 0 ||
        bind_method(base, "add_done_callback", &m_add_done_callback) < 0 ||
        bind_data(base, "_exception", &d_exception_attr) < 0 ||
        bind_data(base, "_source_traceback", &d_source_tb) < 0) {
        return NULL;
    }
    Py_ssize_t offset = base->tp_basicsize;
    offset = (offset + (Py_ssize_t)sizeof(void *) - 1) / (Py_ssize_t)sizeof(void *) * (Py_ssize_t)sizeof(void *);
    twtask_members[0].offset = offset + offsetof(TaskExtra, rec);
    twtask_members[1].offset = offset + offsetof(TaskExtra, release);
    PyType_Slot slots[] = {
        {Py_tp_traverse, twtask_traverse},
        {Py_tp_clear, twtask_clear},
        {Py_tp_dealloc, twtask_dealloc},
        {Py_tp_finalize, twtask_finalize},
        {Py_tp_methods, twtask_methods},
        {Py_tp_members, twtask_members},
        {0, NULL},
    };
    PyType_Spec spec = {
        "taskwatch._task.Task",
        (int)(offset + sizeof(TaskExtra)),
        0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
        slots,
    };
    PyObject *bases = PyTuple_Pack(1, base_obj);
    if (bases == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromSpecWithBases(&spec, bases);
    Py_DECREF(bases);
    if (type == NULL) {
        return NULL;
    }
    task_extra_offset = offset;
    Py_INCREF(base);
    base_task_type = base;
    Py_INCREF(globals);
    task_module_dict = globals;
    tw_task_type = (PyTypeObject *)Py_NewRef(type);
    return type;
}

/* ---------------------------------------------------------------------------------------------
 * module */

static PyObject *
configure_module(PyObject *module, PyObject *args)
{
    PyObject *internal_error, *classify, *boundary, *made_by_library;
    if (!PyArg_ParseTuple(args, "OOO!O:configure", &internal_error, &classify, &PySet_Type, &boundary,
                          &made_by_library)) {
        return NULL;
    }
    Py_INCREF(made_by_library);
    Py_XSETREF(made_by_library_fn, made_by_library);
    Py_INCREF(internal_error);
    Py_XSETREF(internal_error_fn, internal_error);
    Py_INCREF(classify);
    Py_XSETREF(classify_fn, classify);
    Py_INCREF(boundary);
    Py_XSETREF(boundary_set, boundary);
    cache_clear();
    Py_RETURN_NONE;
}

static PyObject *
invalidate(PyObject *module, PyObject *unused)
{
    cache_clear();
    Py_RETURN_NONE;
}

static PyObject *
next_id(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(++next_id_value);
}

static PyMethodDef module_methods[] = {
    {"configure", configure_module, METH_VARARGS,
     "configure(internal_error, is_internal, boundary_ids): the Python side the C side calls"},
    {"invalidate", invalidate, METH_NOARGS, "forget cached code classifications"},
    {"next_id", next_id, METH_NOARGS, "the next task id (never reused, shared with Python)"},
    {"task_type", task_type, METH_VARARGS, "task_type(asyncio.Task, globals) -> taskwatch's C Task"},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "taskwatch._speedups",
    "taskwatch's per-task hot path in C (optional accelerator).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text) do { var = PyUnicode_InternFromString(text); if (var == NULL) return NULL; } while (0)
    INTERN(s_cr_code, "cr_code");
    INTERN(s_gi_code, "gi_code");
    INTERN(s_add_done_callback, "add_done_callback");
    INTERN(s_tw_rec, "_tw_rec");
    INTERN(s_on_failed, "on_failed");
    INTERN(s_cancel_settled, "cancel_settled");
    INTERN(s_schedule_orphan_check, "schedule_orphan_check");
    INTERN(s_trim_source_traceback, "trim_source_traceback");
    INTERN(s_context, "context");
    INTERN(s_eager_start, "eager_start");
    INTERN(s_on_exception_read, "on_exception_read");
    INTERN(s_co_name, "co_name");
#undef INTERN
    kw_loop_context = Py_BuildValue("(ss)", "loop", "context");
    kw_loop_name_context = Py_BuildValue("(sss)", "loop", "name", "context");
    kw_context = Py_BuildValue("(s)", "context");
    if (kw_loop_context == NULL || kw_loop_name_context == NULL || kw_context == NULL) {
        return NULL;
    }
#if !defined(__linux__)
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL) {
        return NULL;
    }
    monotonic_fn = PyObject_GetAttrString(time_mod, "monotonic");
    Py_DECREF(time_mod);
    if (monotonic_fn == NULL) {
        return NULL;
    }
#endif
    RecordType = (PyTypeObject *)PyType_FromSpec(&record_spec);
    if (RecordType == NULL || PyType_Ready(&RecorderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(RecordType);
    if (PyModule_AddObject(m, "RecordType", (PyObject *)RecordType) < 0) {
        Py_DECREF(RecordType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RecorderType);
    if (PyModule_AddObject(m, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(&RecorderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "FLAG_PRECISE", PRECISE) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_RELEASED", RELEASED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
