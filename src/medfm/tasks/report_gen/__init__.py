"""Report generation: nearest-neighbour retrieval and generator-based reports, scored with
BLEU-1..4, ROUGE-L, METEOR, CIDEr and a simple clinical-efficacy F1 (see ``protocol``)."""

from medfm.tasks.report_gen.protocol import (
    ReportConfig,
    evaluate_reports,
    generate_reports,
    retrieve_reports,
    run_report_generation,
)

__all__ = ["ReportConfig", "evaluate_reports", "generate_reports", "retrieve_reports", "run_report_generation"]
