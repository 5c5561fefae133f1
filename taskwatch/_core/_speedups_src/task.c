/* task.c: asyncio's C Task, and taskwatch's subclass of it.
 *
 * First how the accelerator reads asyncio's C Task: its methods and data descriptors bound once
 * (by task_type()) and called without a lookup per call, on exactly asyncio's and taskwatch's C
 * Tasks (is_c_task, in speedups.h); anything else is read through its Python attributes.
 * Then taskwatch's C Task type itself: its finalizer, observe(), done(), result(), exception().
 */
#include "speedups.h"

PyTypeObject *tw_task_type;   /* taskwatch's C Task, made by task_type() */
PyTypeObject *base_task_type; /* _asyncio.Task, once task_type() ran */

Method m_get_name, m_cancelled, m_done, m_add_done_callback;
Data d_exception_attr, d_source_tb;

/* asyncio.Task's method ``m`` on self: its C function directly on asyncio's and taskwatch's C
 * Tasks, a normal method call on anything else. */
PyObject *
tw_call_method(Method *m, PyObject *self)
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
PyObject *
tw_get_data(Data *d, PyObject *self)
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
            tw_do_release((RecorderObject *)release, self);
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
            done = truth(tw_call_method(&m_done, task));
        }
        if (done > 0) {
            ((RecordObject *)rec)->ended = tw_now();
            done = tw_do_close((RecorderObject *)release, task, (RecordObject *)rec);
        }
        if (done < 0) {
            tw_report_internal("task seen done");
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
    PyObject *r = tw_call_method(&m_done, self);
    if (r == Py_True) {
        observe(self, 1);
    }
    return r;
}

static PyObject *
twtask_result(PyObject *self, PyObject *unused)
{
    PyObject *r = tw_call_method(&m_result, self);
    observe(self, r != NULL ? 1 : -1);
    return r;
}

static PyObject *
twtask_exception(PyObject *self, PyObject *unused)
{
    PyObject *exc = tw_call_method(&m_exception, self);
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
            tw_report_internal("Task.exception");
        }
        Py_XDECREF(r);
    }
    else if (hook == NULL && PyErr_Occurred()) {
        tw_report_internal("Task.exception");
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
PyObject *
tw_make_task_type(PyObject *module, PyObject *args)
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
        "taskwatch._core._task.Task",
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
