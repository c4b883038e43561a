from UltrasoundRefineLib.cli import main

raise SystemExit(main())
