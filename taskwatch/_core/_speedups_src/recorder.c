/* recorder.c: the Recorder, the hot path of one probe. Calling it is the task factory.
 *
 * Per task: the factory (recorder_vectorcall, create_task), the record taken before the task
 * exists (do_record: parent, coroutine code, creation stack from the interpreter's frames, time),
 * the task's own context (own_context), the span gate (gate_create, gate_end), attaching the
 * record to the task (attach, build_task) and closing it (tw_do_close: from the done callback,
 * when the task is freed, or when it is seen done). Then the type: configure, traverse, clear.
 * The RecorderObject struct is in speedups.h (task.c reads it).
 */
#include "speedups.h"
#include "interp.h"

#define MAX_DEPTH 64

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
        int fl = tw_code_flags(code);
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
                fl = tw_code_flags(code);
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

/* capture() from the running frame (the task factory has no frame of its own). */
static int
capture_current(RecorderObject *self, StackItem *items, PyObject **other)
{
#ifdef TW_FAST_FRAMES
    int n = 0;
    InterpFrame *f = tw_frame_top();
    while (f != NULL) {
        PyObject *code = tw_frame_code(f);
        int fl = tw_code_flags(code);
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
            f = tw_frame_back(f);
            continue;
        }
        items[n].code = Py_NewRef(code);
        items[n].lasti = tw_frame_lasti(f);
        if (++n >= self->depth) {
            return n;
        }
        f = tw_frame_back(f);
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
    /* The lineage ContextVar names the parent only when no task runs (a callback made the task)
     * or when the running task is one of ours still in its constructor (an eager first step: its
     * own context carries its record). A task of another kind without a record (one a framework
     * built with asyncio.Task() directly, as aiohttp does per request) is a parent taskwatch does
     * not know: its context's lineage names whoever created *it*, so it is not used. */
    int use_lineage = 1;
    if (cur != NULL && cur != Py_None) {
        PyObject *p;
        if (Py_IS_TYPE(cur, (PyTypeObject *)self->task_type)) {
            p = *slot(cur, self->off_rec);
            Py_XINCREF(p);
        }
        else { /* not watched, or a task of another kind (a duck-typed one included) */
            use_lineage = 0;
            if (tw_optional_attr(cur, s_tw_rec, &p) < 0) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    goto error;
                }
                PyErr_Clear();
                p = NULL;
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
    if (parent == NULL && (!use_lineage || self->lineage == Py_None)) {
        parent = Py_NewRef(Py_None);
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
    rec->created = tw_now();
    rec->ended = 0.0;
    rec->busy = 0.0;
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
        int fl = tw_code_flags(code);
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

/* A fresh copy of the current context carrying the lineage. With the lineage off (None): a plain
 * copy when the span hooks need one to make the task's span current in, else NULL with no error
 * (the Task copies the context itself, as without taskwatch). */
static PyObject *
own_context(RecorderObject *self, PyObject *rec)
{
    if (self->lineage == Py_None) {
        return self->on_create != Py_None ? PyContext_CopyCurrent() : NULL;
    }
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
        tw_report_internal("task factory (attach)");
        return;
    }
    Py_INCREF(rec);
    Py_XSETREF(*slot(task, self->off_rec), rec);
    Py_INCREF(self);
    Py_XSETREF(*slot(task, self->off_release), (PyObject *)self);
    if (needs_done_callback(self, (RecordObject *)rec)) {
        ((RecordObject *)rec)->flags |= PRECISE;
        if (watch_done(self, task) < 0) {
            tw_report_internal("task factory (attach)");
        }
    }
    PyObject *tb = tw_get_data(&d_source_tb, task);
    if (tb == NULL) {
        tw_report_internal("task factory (attach)");
        return;
    }
    int has_tb = PyObject_IsTrue(tb);
    if (has_tb > 0) { /* debug mode: drop taskwatch's frames, as the loop drops its own */
        PyObject *r = PyObject_CallMethodOneArg(self->probe, s_trim_source_traceback, tb);
        if (r == NULL) {
            tw_report_internal("task factory (attach)");
        }
        Py_XDECREF(r);
    }
    else if (has_tb < 0) {
        tw_report_internal("task factory (attach)");
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
        tw_report_internal("task factory (record)");
    }
    else {
        ctx = own_context(self, rec);
        if (ctx == NULL && PyErr_Occurred()) {
            tw_report_internal("task factory (context)");
        }
        if (self->on_create != Py_None && gate_create(self, (RecordObject *)rec, ctx) < 0) {
            tw_report_internal("on_create hook");
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
        tw_report_internal("task factory (record)");
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
int
tw_do_close(RecorderObject *self, PyObject *task, RecordObject *rec)
{
    PyObject *r, *exc = NULL;
    int is_cancelled;
    if (is_c_task(task)) {
        r = tw_call_method(&m_get_name, task);
        if (r == NULL) {
            return -1;
        }
        Py_XSETREF(rec->name, r);
        is_cancelled = truth(tw_call_method(&m_cancelled, task));
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
            exc = tw_get_data(&d_exception_attr, task);
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
            PyObject *stack = tw_record_stack(p);
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
    if (tw_do_close(self, args[0], (RecordObject *)args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The task object is being freed: tasks without a done callback are closed here. */
void
tw_do_release(RecorderObject *self, PyObject *task)
{
    if (!Py_IS_TYPE(task, (PyTypeObject *)self->task_type)) {
        return; /* only this recorder's tasks hold it as their release hook */
    }
    PyObject *rec = *slot(task, self->off_rec);
    if (rec == NULL || !IS_RECORD(rec) || ((RecordObject *)rec)->ended != 0.0) {
        return;
    }
    Py_INCREF(rec);
    int done = truth(tw_call_method(&m_done, task));
    if (done > 0) {
        ((RecordObject *)rec)->ended = tw_now();
        ((RecordObject *)rec)->flags |= RELEASED;
        done = tw_do_close(self, task, (RecordObject *)rec);
    }
    if (done < 0) {
        tw_report_internal("task release");
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
    if (state != NULL && PyList_GET_SIZE(state) != 2) {
        PyErr_SetString(PyExc_TypeError, "gate: the state list has 2 items");
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
        if (tw_optional_attr(task, s_tw_rec, &rec) < 0) {
            PyErr_Clear();
            rec = NULL;
        }
    }
    if (rec != NULL && IS_RECORD(rec) && ((RecordObject *)rec)->ended == 0.0) {
        ((RecordObject *)rec)->ended = tw_now();
        if (tw_do_close(self, task, (RecordObject *)rec) < 0) {
            tw_report_internal("task done callback");
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
    if (lineage != Py_None && !PyContextVar_CheckExact(lineage)) {
        PyErr_SetString(PyExc_TypeError, "lineage must be a ContextVar, or None (lineage=False)");
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

PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskwatch._core._speedups.Recorder",
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
