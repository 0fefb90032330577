from deeplab.cli import main

raise SystemExit(main())
