/* record.c: RecordType, the fields of TaskRecord (taskwatch/_record.py adds the methods): the
 * per-task record the Recorder fills, its dealloc and its creation stack (rec.stack), kept inline
 * and turned into a tuple on first access. The struct is in speedups.h (recorder.c fills it).
 *
 * Records (RecordType) are not tracked by the cyclic GC: they reference only older records, code
 * objects, tuples, strings and span objects, never anything that leads back to them.
 */
#include "speedups.h"

PyTypeObject *RecordType; /* a heap type without GC (made in PyInit), see the top */

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
    {"busy", T_DOUBLE, offsetof(RecordObject, busy), 0, NULL},
    {"live_children", T_PYSSIZET, offsetof(RecordObject, live_children), 0, NULL},
    {"flags", T_LONG, offsetof(RecordObject, flags), 0, NULL},
    {"internal", T_BOOL, offsetof(RecordObject, internal), 0, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RecordObject, weakreflist), READONLY, NULL},
    {NULL},
};

/* rec.stack: the flat (code, lasti, ...) tuple, or None (no user frame). New reference. */
PyObject *
tw_record_stack(RecordObject *self)
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
    return tw_record_stack(self);
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

PyType_Spec record_spec = {
    "taskwatch._core._record.TaskRecord",
    offsetof(RecordObject, items),
    sizeof(StackItem),
    Py_TPFLAGS_DEFAULT,
    record_slots,
};
