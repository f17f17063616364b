from efctl.cli import main

raise SystemExit(main())
