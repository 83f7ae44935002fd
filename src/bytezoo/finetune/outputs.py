"""What ``bytezoo finetune`` writes into its output folder: a training run's outputs (:mod:`bytezoo.training`), and
the comparison's (:mod:`bytezoo.finetune.compare`). Both the trainer, which claims the folder, and the comparison
read these names from here."""
from bytezoo.training.run_folder import CACHES, RUN_OUTPUTS, FolderUse

REPORT_FILE = "report.json"
PLOT_FILE = "comparison.png"
SUBRUNS = "label-counts"  # OUTPUT/label-counts/n-COUNT: the runs on fewer labels than the largest count

# A folder holding any of these holds an earlier run (or comparison); --overwrite removes them all.
FINETUNE_RUN = FolderUse("bytezoo", (*RUN_OUTPUTS, REPORT_FILE, PLOT_FILE, SUBRUNS), caches=CACHES, can_resume=True)

__all__ = ["FINETUNE_RUN", "PLOT_FILE", "REPORT_FILE", "SUBRUNS"]
