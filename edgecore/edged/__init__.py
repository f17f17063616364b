"""edged: the edge's App supervisor (KubeEdge's edged, for processes instead of pods).

One concept per module:

* ``supervisor.py`` - :class:`Edged`: follows the cache's AppReplica objects, one runner each
* ``replica.py``    - a replica's life: prepare, run, restart, stop, report
* ``policy.py``     - pure decisions: restart policy, back-off, exit wording
* ``process.py``    - one run of the program in its own session, output piped to files
* ``logfiles.py``   - bounded rotating stdout/stderr files
* ``memory.py``     - memory limits: cgroup v2 where delegated, RLIMIT_AS otherwise
* ``files.py``      - config files and sha256-verified artifacts in the working directory
* ``environment.py``- the environment a replica starts with
* ``layout.py``     - where a replica lives on disk
* ``leftovers.py``  - processes a killed edgecore left running
* ``reporting.py``  - status upstream, only on change
"""

from edgecore.edged.files import FetchArtifact
from edgecore.edged.reporting import ReportStatus
from edgecore.edged.supervisor import Edged

__all__ = ["Edged", "FetchArtifact", "ReportStatus"]
