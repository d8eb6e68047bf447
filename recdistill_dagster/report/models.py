"""The models a transferability report compares, defined once: prediction column, label, colour.

The prediction columns, the report's AUC keys, the plots' legends and colours and the UI's model
table all come from `REPORT_MODELS`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportModel:
    key: str  # prediction column and key of the report's per-model numbers
    label: str  # what people read
    colour: str  # matplotlib colour
    line: str  # matplotlib line style of the plots over days
    calibrated_plot: bool = True  # drawn in the calibration plots


TEACHER = ReportModel("teacher", "teacher", "C3", "-o")
RAW = ReportModel("student_raw", "baseline student (P_S_raw)", "C7", "-o")
DISTILLED = ReportModel("student_distill", "distilled student, main tower (served)", "C0", "-o")
AUX = ReportModel("student_aux", "distilled student, aux tower", "C0", ":", calibrated_plot=False)
REPORT_MODELS: tuple[ReportModel, ...] = (TEACHER, RAW, DISTILLED, AUX)
# The AUC of the true click probability (synthetic data only): the limit no model can beat.
BAYES = ReportModel("bayes", "Bayes limit (p_true)", "k", "--", calibrated_plot=False)
MODEL_KEYS: tuple[str, ...] = tuple(m.key for m in REPORT_MODELS)
