@echo off
rem Start sdlocal: find a supported Python, make the venv, then launch.py installs what the lock says and serves.
rem Usage: webui.bat [flags]   (webui.bat --help lists them; put your usual flags in webui-user.bat)
rem Keep step-for-step alike with webui.sh.
setlocal EnableDelayedExpansion

rem 1. Work from this script's own folder (double-click, or run from anywhere).
cd /d "%~dp0"

rem 2. Optional user settings: COMMANDLINE_ARGS, VENV_DIR, PYTHON, TORCH_INDEX_URL.
if exist webui-user.bat call webui-user.bat
if not defined VENV_DIR set "VENV_DIR=venv"
set "SUPPORTED=3.10, 3.11 or 3.12"
set "CHECK=import sys; v = sys.version_info[:2]; print('%%d.%%d' %% v) if (3, 10) <= v <= (3, 12) else None"

set "VENV_PY=%VENV_DIR%\Scripts\python.exe"
rem 3. Second start: the venv exists and works, so no probing and no venv creation.
if exist "%VENV_PY%" (
    set "VER="
    for /f "delims=" %%v in ('""%VENV_PY%" -c "%CHECK%" 2>nul"') do set "VER=%%v"
    if defined VER goto :launch
)

rem 4. Find supported Pythons, newest first: 3.12, 3.11, 3.10 (py launcher), then python (or %PYTHON% if set).
set "CANDIDATES="
set "FIRST="
if defined PYTHON (
    set "LIST=%PYTHON%"
) else (
    set "LIST="py -3.12" "py -3.11" "py -3.10" python"
)
for %%c in (%LIST%) do (
    set "VER="
    for /f "delims=" %%v in ('%%~c -c "%CHECK%" 2^>nul') do set "VER=%%v"
    if defined VER (
        for /f "delims=" %%p in ('%%~c -c "import sys; print(sys.executable)"') do (
            set "CANDIDATES=!CANDIDATES! "%%p""
            if not defined FIRST set "FIRST=%%p"
        )
    )
)
if not defined FIRST (
    echo [sdlocal] ERROR: sdlocal needs Python %SUPPORTED%. Install one from python.org ^(tick "Add python.exe to PATH"^) and run webui.bat again.
    goto :error
)

rem 5. Choose among them: without an NVIDIA GPU prefer one that gets torch's CPU build (see launch.py --pick-python;
rem    torch's ROCm wheels for AMD GPUs are Linux-only).
set "PY=%FIRST%"
rem (the outer quotes keep cmd from stripping the quotes around the paths)
for /f "delims=" %%p in ('""%FIRST%" launch.py --pick-python %CANDIDATES%"') do set "PY=%%p"

rem 6. Create the venv.
echo [sdlocal] creating the virtual environment in %VENV_DIR% with Python from %PY%
if exist "%VENV_DIR%" rmdir /s /q "%VENV_DIR%"
"%PY%" -m venv "%VENV_DIR%"
if errorlevel 1 (
    echo [sdlocal] ERROR: could not create %VENV_DIR%.
    goto :error
)

:launch
rem 7. launch.py checks the pinned packages (installing what differs), runs the doctor, then serves.
"%VENV_PY%" launch.py %* %COMMANDLINE_ARGS%
if errorlevel 1 goto :error
exit /b 0

:error
echo.
echo [sdlocal] sdlocal stopped with an error; the messages above say what to fix.
pause
exit /b 1
